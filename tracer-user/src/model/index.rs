//! Task lookups by a key the task itself holds (its header address, its id): the table
//! stores a 4-byte task index per task, not a copy of the key, because a traced process
//! can hold millions of tasks (`HashMap<u64, usize>` costs 36 bytes a task, this 10).

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::Task;

#[derive(Clone)]
pub struct TaskIndex {
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
    key: fn(&Task) -> u64,
}

impl TaskIndex {
    pub fn new(key: fn(&Task) -> u64) -> Self {
        Self {
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            key,
        }
    }

    pub fn get(&self, key: u64, tasks: &[Task]) -> Option<usize> {
        let k = self.key;
        self.table
            .find(self.hasher.hash_one(key), |&i| k(&tasks[i as usize]) == key)
            .map(|&i| i as usize)
    }

    /// Indexes `tasks[i]` (already in `tasks`) by its key, replacing any task that had
    /// the same key.
    pub fn insert(&mut self, i: usize, tasks: &[Task]) {
        let k = self.key;
        let key = k(&tasks[i]);
        let hasher = &self.hasher;
        let i = u32::try_from(i).expect("fewer than 4 billion tasks");
        match self.table.entry(
            hasher.hash_one(key),
            |&j| k(&tasks[j as usize]) == key,
            |&j| hasher.hash_one(k(&tasks[j as usize])),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = i,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(i);
            }
        }
    }

    pub fn remove(&mut self, key: u64, tasks: &[Task]) -> Option<usize> {
        let k = self.key;
        match self
            .table
            .find_entry(self.hasher.hash_one(key), |&i| k(&tasks[i as usize]) == key)
        {
            Ok(e) => Some(e.remove().0 as usize),
            Err(_) => None,
        }
    }

    pub fn values(&self) -> impl Iterator<Item = usize> + '_ {
        self.table.iter().map(|&i| i as usize)
    }

    /// Frees the table (the tasks are handed over to the report).
    pub fn clear(&mut self) {
        self.table = HashTable::new();
    }
}
