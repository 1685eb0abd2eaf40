//! Empty library target: lets `dns-fastpath` name this crate as a build dependency so that cargo reruns its build script (which builds the program) when the program changes.
#![no_std]
