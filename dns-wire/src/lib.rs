//! DNS wire format (RFC 1035, 2181, 6891, 7871): decode from borrowed slices, encode with compression.
