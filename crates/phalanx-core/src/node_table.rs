//! The snapshot's nodes, each in a fixed slot while it exists, with the
//! slots kept in name order: a decision walks nodes (and a topology domain's
//! member list reaches them) by slot, without a name lookup or a tree walk
//! per node, for every member of a gang.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use super::node::NodeInfo;

/// Where a node lives in the table; stable until the node is removed.
pub(crate) type Slot = usize;

#[derive(Debug, Default)]
pub(crate) struct NodeTable {
    slots: Vec<NodeInfo>,
    /// Each slot's node name (empty while vacant).
    names: Vec<String>,
    /// Slots of removed nodes, reused by the next ones added.
    vacant: Vec<Slot>,
    /// foldhash: node names are looked up in every decision, and SipHash's
    /// flooding resistance buys nothing against names the API server vetted.
    by_name: HashMap<String, Slot, RandomState>,
    in_name_order: Vec<Slot>,
}

impl NodeTable {
    pub fn get(&self, name: &str) -> Option<&NodeInfo> {
        self.by_name.get(name).map(|&slot| &self.slots[slot])
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut NodeInfo> {
        self.by_name.get(name).map(|&slot| &mut self.slots[slot])
    }

    pub fn slot_of(&self, name: &str) -> Option<Slot> {
        self.by_name.get(name).copied()
    }

    /// The node's entry, created empty if it has none.
    pub fn entry(&mut self, name: &str) -> (Slot, &mut NodeInfo) {
        let slot = match self.by_name.get(name) {
            Some(&slot) => slot,
            None => {
                let slot = self.vacant.pop().unwrap_or_else(|| {
                    self.slots.push(NodeInfo::default());
                    self.names.push(String::new());
                    self.slots.len() - 1
                });
                self.names[slot] = name.to_string();
                self.by_name.insert(name.to_string(), slot);
                insert_in_name_order(&self.names, &mut self.in_name_order, slot);
                slot
            }
        };
        (slot, &mut self.slots[slot])
    }

    pub fn remove(&mut self, name: &str) {
        if let Some(slot) = self.by_name.remove(name) {
            remove_in_name_order(&self.names, &mut self.in_name_order, slot);
            self.slots[slot] = NodeInfo::default();
            self.names[slot] = String::new();
            self.vacant.push(slot);
        }
    }

    pub fn at(&self, slot: Slot) -> &NodeInfo {
        &self.slots[slot]
    }

    /// Every entry, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &NodeInfo> {
        self.in_name_order.iter().map(|&slot| &self.slots[slot])
    }

    /// Adds `slot` to a list of slots kept in name order (once).
    pub fn list(&self, slots: &mut Vec<Slot>, slot: Slot) {
        insert_in_name_order(&self.names, slots, slot);
    }

    /// Takes `slot` out of a list made by [`NodeTable::list`].
    pub fn unlist(&self, slots: &mut Vec<Slot>, slot: Slot) {
        remove_in_name_order(&self.names, slots, slot);
    }
}

/// Where `slot` belongs in `slots` (sorted by `names`), and whether it is there.
fn position(names: &[String], slots: &[Slot], slot: Slot) -> (usize, bool) {
    let name = names[slot].as_str();
    let at = slots.partition_point(|&s| names[s].as_str() < name);
    (at, slots.get(at) == Some(&slot))
}

fn insert_in_name_order(names: &[String], slots: &mut Vec<Slot>, slot: Slot) {
    if let (at, false) = position(names, slots, slot) {
        slots.insert(at, slot);
    }
}

fn remove_in_name_order(names: &[String], slots: &mut Vec<Slot>, slot: Slot) {
    if let (at, true) = position(names, slots, slot) {
        slots.remove(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(table: &NodeTable) -> Vec<u64> {
        table.iter().map(|n| n.version).collect()
    }

    #[test]
    fn slots_stay_put_are_walked_in_name_order_and_reused_after_removal() {
        let mut table = NodeTable::default();
        for (name, version) in [("c", 3), ("a", 1), ("b", 2)] {
            table.entry(name).1.version = version;
        }
        assert_eq!(versions(&table), [1, 2, 3]);
        let a = table.slot_of("a").unwrap();
        assert_eq!(table.entry("a").0, a, "an existing node keeps its slot");
        assert_eq!(table.at(a).version, 1);

        table.remove("a");
        assert!(table.get("a").is_none());
        assert_eq!(versions(&table), [2, 3]);
        let (d, info) = table.entry("d");
        assert_eq!(d, a, "the vacant slot is reused");
        assert_eq!(info.version, 0, "and starts empty");
        info.version = 4;
        assert_eq!(versions(&table), [2, 3, 4]);
    }

    #[test]
    fn member_lists_keep_name_order_and_hold_each_slot_once() {
        let mut table = NodeTable::default();
        let slots: Vec<Slot> = ["n2", "n0", "n1"].iter().map(|n| table.entry(n).0).collect();
        let mut list = Vec::new();
        for &s in slots.iter().chain(&slots) {
            table.list(&mut list, s);
        }
        assert_eq!(list, [slots[1], slots[2], slots[0]]);
        table.unlist(&mut list, slots[2]);
        table.unlist(&mut list, slots[2]);
        assert_eq!(list, [slots[1], slots[0]]);
    }
}
