//! A slab of in-flight items addressed by mio tokens that carry a generation, so a stale event never reaches a reused slot.

use mio::Token;

struct Slot<T> {
    generation: u32,
    item: Option<T>,
}

/// Items keyed by [`Token`]s: the low 32 bits are the slot, the high bits its
/// generation, bumped on every removal.
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    pub fn new() -> Slab<T> {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The token the next [`Slab::insert`] will return.
    pub fn vacant_token(&self) -> Token {
        match self.free.last() {
            Some(&i) => token(i, self.slots[i as usize].generation),
            None => token(self.slots.len() as u32, 0),
        }
    }

    pub fn insert(&mut self, item: T) -> Token {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                let s = &mut self.slots[i as usize];
                s.item = Some(item);
                token(i, s.generation)
            }
            None => {
                let i = self.slots.len() as u32;
                self.slots.push(Slot {
                    generation: 0,
                    item: Some(item),
                });
                token(i, 0)
            }
        }
    }

    pub fn get_mut(&mut self, t: Token) -> Option<&mut T> {
        let (i, g) = split(t);
        self.slots
            .get_mut(i as usize)
            .filter(|s| s.generation == g)
            .and_then(|s| s.item.as_mut())
    }

    pub fn remove(&mut self, t: Token) -> Option<T> {
        let (i, g) = split(t);
        let s = self
            .slots
            .get_mut(i as usize)
            .filter(|s| s.generation == g)?;
        let item = s.item.take()?;
        s.generation = s.generation.wrapping_add(1);
        self.free.push(i);
        self.len -= 1;
        Some(item)
    }
}

fn token(i: u32, generation: u32) -> Token {
    Token(((generation as usize) << 32) | i as usize)
}

fn split(t: Token) -> (u32, u32) {
    (t.0 as u32, (t.0 >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_does_not_answer_to_its_old_token() {
        let mut s = Slab::new();
        let a = s.insert("a");
        assert_eq!(s.vacant_token(), Token(1));
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_ne!(a, b);
        assert!(s.get_mut(a).is_none());
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get_mut(b), Some(&mut "b"));
        assert_eq!(s.len(), 1);
    }
}
