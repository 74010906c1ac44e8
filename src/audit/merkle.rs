//! The Merkle tree over the audit trail's records, in the shape of RFC 6962 section 2.1 (and
//! RFC 9162 section 2.1): leaf hash `SHA-256(0x00 || leaf)`, node hash `SHA-256(0x01 || left ||
//! right)`, and the root of `n` leaves split at the largest power of two below `n`. A signed
//! checkpoint names a size and this root: whoever holds it can tell whether the first `size`
//! records are still the ones it covered.
//!
//! [`Frontier`] keeps the roots of the perfect subtrees that make up the tree so far (one per set
//! bit of the size), so appending a leaf and taking the root cost `O(log n)` and no leaf is kept
//! in memory. [`Tree::inclusion`] and [`verify_inclusion`] prove one record against a root (RFC 9162
//! section 2.1.3), also after retention removed the records before it.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(leaf);
    hasher.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree: `SHA-256()`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The tree so far: the roots of its perfect subtrees, largest (leftmost) first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(height, root)`: a subtree of `2^height` leaves.
    subtrees: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf by its leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0, leaf);
        while let Some(&(height, left)) = self.subtrees.last() {
            if height != node.0 {
                break;
            }
            self.subtrees.pop();
            node = (height + 1, node_hash(&left, &node.1));
        }
        self.subtrees.push(node);
        self.size += 1;
    }

    /// The subtrees, largest first (what a retention cut keeps of the records it removes).
    pub fn subtrees(&self) -> &[(u32, Hash)] {
        &self.subtrees
    }

    /// The frontier of `size` leaves with these subtrees; `None` when they cannot be one (one
    /// subtree per set bit of `size`, largest first).
    pub fn resume(size: u64, subtrees: Vec<(u32, Hash)>) -> Option<Self> {
        let heights = (0..64).rev().filter(|bit| size >> bit & 1 == 1);
        subtrees
            .iter()
            .map(|(height, _)| *height)
            .eq(heights)
            .then_some(Self { size, subtrees })
    }

    /// The tree's root (RFC 6962 MTH): the subtrees folded from the right.
    pub fn root(&self) -> Hash {
        let mut subtrees = self.subtrees.iter().rev();
        let Some(&(_, mut root)) = subtrees.next() else {
            return empty_root();
        };
        for (_, left) in subtrees {
            root = node_hash(left, &root);
        }
        root
    }
}

/// The root of `leaves` (leaf hashes), computed the way RFC 6962 defines it.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let split = split(leaves.len());
            node_hash(&root(&leaves[..split]), &root(&leaves[split..]))
        }
    }
}

/// The largest power of two smaller than `n` (n >= 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// A tree whose first leaves may be gone (removed by retention): the subtrees that covered
/// them (`cut`, the frontier when they were removed), then the leaf hashes after them. Every
/// subtree a root or an audit path of a later leaf needs is either one of the cut's subtrees
/// or made of later leaves (RFC 6962 subtrees are aligned powers of two, and they nest), so
/// those can still be computed; what needs a removed leaf is `None`.
pub struct Tree<'a> {
    cut: &'a Frontier,
    leaves: &'a [Hash],
}

impl<'a> Tree<'a> {
    pub fn new(cut: &'a Frontier, leaves: &'a [Hash]) -> Self {
        Self { cut, leaves }
    }

    pub fn size(&self) -> u64 {
        self.cut.size + self.leaves.len() as u64
    }

    /// The leaf hash at `index`, unless it was removed.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let kept = index.checked_sub(self.cut.size)?;
        self.leaves.get(kept as usize).copied()
    }

    /// The root of the first `size` leaves.
    pub fn root(&self, size: u64) -> Option<Hash> {
        match size {
            0 => Some(empty_root()),
            _ if size > self.size() => None,
            _ => self.range(0, size),
        }
    }

    /// The audit path of leaf `index` in the tree of the first `size` leaves (RFC 9162 section
    /// 2.1.3.1), bottom up.
    pub fn inclusion(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.size() {
            return None;
        }
        self.path(index, 0, size)
    }

    fn path(&self, index: u64, from: u64, to: u64) -> Option<Vec<Hash>> {
        if to - from <= 1 {
            return Some(Vec::new());
        }
        let middle = from + split((to - from) as usize) as u64;
        let (mut path, sibling) = if index < middle {
            (self.path(index, from, middle)?, self.range(middle, to)?)
        } else {
            (self.path(index, middle, to)?, self.range(from, middle)?)
        };
        path.push(sibling);
        Some(path)
    }

    /// The root of leaves `from..to` (not empty).
    fn range(&self, from: u64, to: u64) -> Option<Hash> {
        let cut = self.cut.size;
        if from >= cut {
            return Some(root(
                &self.leaves[(from - cut) as usize..(to - cut) as usize],
            ));
        }
        let mut start = 0;
        for (height, hash) in &self.cut.subtrees {
            let end = start + (1u64 << height);
            if (start, end) == (from, to) {
                return Some(*hash);
            }
            start = end;
        }
        if to - from == 1 {
            return None;
        }
        let middle = from + split((to - from) as usize) as u64;
        Some(node_hash(
            &self.range(from, middle)?,
            &self.range(middle, to)?,
        ))
    }
}

/// Whether `path` proves `leaf` at `index` in a tree of `size` leaves with `root` (RFC 9162
/// section 2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: Hash, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = leaf;
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&[i as u8])).collect()
    }

    #[test]
    fn the_empty_tree_and_rfc_6962_hashing() {
        // RFC 6962's test vectors (the certificate-transparency reference implementation).
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(root(&[]), empty_root(), "the tree of no records");
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        let tree: Vec<Hash> = [
            &b""[..],
            &[0x00],
            &[0x10],
            &[0x20, 0x21],
            &[0x30, 0x31],
            &[0x40, 0x41, 0x42, 0x43],
            &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            &[
                0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
                0x6e, 0x6f,
            ],
        ]
        .iter()
        .map(|leaf| leaf_hash(leaf))
        .collect();
        assert_eq!(
            hex::encode(root(&tree)),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
        assert_eq!(
            hex::encode(root(&tree[..3])),
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"
        );
    }

    #[test]
    fn the_frontier_has_the_same_root_as_the_whole_tree_at_every_size() {
        let all = leaves(70);
        let mut frontier = Frontier::default();
        assert_eq!(frontier.root(), empty_root());
        for (n, leaf) in all.iter().enumerate() {
            frontier.push(*leaf);
            assert_eq!(frontier.size(), n as u64 + 1);
            assert_eq!(frontier.root(), root(&all[..=n]), "size {}", n + 1);
        }
    }

    #[test]
    fn every_leaf_is_proven_and_nothing_else_is() {
        for size in 1..=20 {
            let all = leaves(size);
            let top = root(&all);
            for index in 0..size {
                let (i, n) = (index as u64, size as u64);
                let path = Tree::new(&Frontier::default(), &all)
                    .inclusion(i, n)
                    .unwrap();
                assert!(
                    verify_inclusion(i, n, all[index], &path, &top),
                    "{index}/{size}"
                );
                let other = leaf_hash(b"other");
                assert!(!verify_inclusion(i, n, other, &path, &top));
                assert!(!verify_inclusion(i + 1, n, all[index], &path, &top) || size == 1);
                assert!(!verify_inclusion(n, n, all[index], &path, &top));
            }
        }
    }

    #[test]
    fn after_a_cut_later_leaves_are_still_proven_against_the_same_roots() {
        let all = leaves(40);
        let whole = Frontier::default();
        let full = Tree::new(&whole, &all);
        for cut in 1..all.len() {
            let mut frontier = Frontier::default();
            all[..cut].iter().for_each(|leaf| frontier.push(*leaf));
            let tree = Tree::new(&frontier, &all[cut..]);
            for size in cut as u64..=all.len() as u64 {
                assert_eq!(
                    tree.root(size),
                    Some(root(&all[..size as usize])),
                    "{cut}/{size}"
                );
                for index in 0..size {
                    let path = tree.inclusion(index, size);
                    if index < cut as u64 {
                        assert_eq!(tree.leaf(index), None);
                    } else {
                        assert_eq!(path, full.inclusion(index, size), "{cut}/{index}/{size}");
                    }
                }
            }
            let size = tree.size();
            assert_eq!(tree.root(0), Some(empty_root()));
            assert_eq!(tree.root(size + 1), None, "more than it holds");
            assert_eq!(tree.inclusion(size, size), None, "no such leaf");
            assert_eq!(tree.inclusion(cut as u64, size + 1), None, "no such tree");
            let resumed = Frontier::resume(frontier.size(), frontier.subtrees().to_vec());
            assert_eq!(resumed.as_ref(), Some(&frontier));
        }
        assert_eq!(Frontier::resume(3, vec![(1, [0; 32])]), None);
        assert_eq!(Frontier::resume(2, vec![(0, [0; 32]), (0, [0; 32])]), None);
    }
}
