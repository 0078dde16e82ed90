package authmap

import (
	"math/bits"
	"slices"
)

// linkSet is an immutable set of key numbers: the keys linked to one
// deployment. A change returns a new set that shares everything it can with
// the old one, so a request holding the old set is never disturbed and a
// change costs O(log n), not O(n), even for a deployment with a million
// keys.
//
// A small set is a sorted array, inline up to inlineMax and then a slice,
// copied whole on change. A large one is a 64-ary bitmap trie over the number's bits: the
// lowest level holds one uint64 bitmap per 64 consecutive numbers, and
// every level above holds a bitmap of which children exist plus only those
// children. Key numbers are dense (given out in creation order), so leaves
// fill up and a million links cost about a byte each.
type linkSet struct {
	// The fields contains reads come first, in the order it reads them,
	// so that a small set is a few bytes after the deployment's header.
	n      int32
	height uint8 // levels of inner nodes above the leaf bitmaps; root's level
	root   *lnode
	// inl is the whole set, sorted, while n ≤ inlineMax: most deployments
	// have a few keys, and keeping them inside the deployment's own state
	// saves the decision a dependent cache miss (the slice's).
	inl   [inlineMax]uint32
	small []uint32 // sorted; the whole set while inlineMax < n and root is nil
}

const (
	// inlineMax is the largest set kept inline: a cache line of key
	// numbers. (It was 8; a deployment with 9–16 keys then cost the
	// decision one more dependent miss, on the slice.)
	inlineMax = 16
	// smallMax is the largest set kept as a sorted slice; a trie that
	// shrinks to smallMax/2 goes back to a slice.
	smallMax = 32
)

// members returns the set's sorted slice when it is not a trie.
func (s *linkSet) members() []uint32 {
	if s.n <= inlineMax {
		return s.inl[:s.n]
	}
	return s.small
}

// fromSorted returns the set of the sorted, distinct values.
func fromSorted(vals []uint32) linkSet {
	s := linkSet{n: int32(len(vals))}
	if len(vals) <= inlineMax {
		copy(s.inl[:], vals)
	} else {
		s.small = vals
	}
	return s
}

// lnode is a trie node at some level l ≥ 1; it indexes bits 6l..6l+5 of a
// number. Level-1 nodes hold leaf bitmaps (bits 0..5), higher levels hold
// nodes.
type lnode struct {
	bits   uint64
	kids   []*lnode // level > 1: one per set bit, in bit order
	leaves []uint64 // level 1: one bitmap per set bit, in bit order
}

func (s *linkSet) len() int { return int(s.n) }

func (s *linkSet) contains(v uint32) bool {
	if s.root == nil {
		// Linear scan: the slice is at most smallMax entries and usually a
		// handful, where a scan beats a binary search's branches.
		for _, x := range s.members() {
			if x >= v {
				return x == v
			}
		}
		return false
	}
	if uint64(v)>>(6*(uint(s.height)+1)) != 0 {
		return false
	}
	n := s.root
	for l := uint(s.height); l > 1; l-- {
		bit := uint64(1) << ((v >> (6 * l)) & 63)
		if n.bits&bit == 0 {
			return false
		}
		n = n.kids[bits.OnesCount64(n.bits&(bit-1))]
	}
	bit := uint64(1) << ((v >> 6) & 63)
	if n.bits&bit == 0 {
		return false
	}
	return n.leaves[bits.OnesCount64(n.bits&(bit-1))]&(1<<(v&63)) != 0
}

// with returns the set plus v.
func (s linkSet) with(v uint32) linkSet {
	if s.root == nil {
		cur := s.members()
		i, found := slices.BinarySearch(cur, v)
		if found {
			return s
		}
		if len(cur) < smallMax {
			vals := make([]uint32, len(cur)+1)
			copy(vals, cur[:i])
			vals[i] = v
			copy(vals[i+1:], cur[i:])
			return fromSorted(vals)
		}
		t := linkSet{}
		for _, x := range cur {
			t = t.trieWith(x)
		}
		return t.trieWith(v)
	}
	return s.trieWith(v)
}

func (s linkSet) trieWith(v uint32) linkSet {
	if s.root == nil {
		s = linkSet{n: s.n, height: 1}
		s.root = &lnode{}
	}
	for uint64(v)>>(6*(uint(s.height)+1)) != 0 {
		// Grow a level: the old root becomes child 0 of the new one.
		s.root = &lnode{bits: 1, kids: []*lnode{s.root}}
		s.height++
	}
	root, added := s.root.with(v, uint(s.height))
	if !added {
		return s
	}
	return linkSet{root: root, height: s.height, n: s.n + 1}
}

func (n *lnode) with(v uint32, level uint) (*lnode, bool) {
	bit := uint64(1) << ((v >> (6 * level)) & 63)
	pos := bits.OnesCount64(n.bits & (bit - 1))
	present := n.bits&bit != 0
	c := &lnode{bits: n.bits | bit}
	if level == 1 {
		leafBit := uint64(1) << (v & 63)
		if present {
			if n.leaves[pos]&leafBit != 0 {
				return n, false
			}
			c.leaves = slices.Clone(n.leaves)
			c.leaves[pos] |= leafBit
		} else {
			c.leaves = slices.Insert(slices.Clip(n.leaves), pos, leafBit)
		}
		return c, true
	}
	if present {
		kid, added := n.kids[pos].with(v, level-1)
		if !added {
			return n, false
		}
		c.kids = slices.Clone(n.kids)
		c.kids[pos] = kid
		return c, true
	}
	kid, _ := (&lnode{}).with(v, level-1)
	c.kids = slices.Insert(slices.Clip(n.kids), pos, kid)
	return c, true
}

// without returns the set minus v.
func (s linkSet) without(v uint32) linkSet {
	if s.root == nil {
		cur := s.members()
		i, found := slices.BinarySearch(cur, v)
		if !found {
			return s
		}
		vals := make([]uint32, 0, len(cur)-1)
		vals = append(vals, cur[:i]...)
		vals = append(vals, cur[i+1:]...)
		return fromSorted(vals)
	}
	if uint64(v)>>(6*(uint(s.height)+1)) != 0 {
		return s
	}
	root, removed := s.root.without(v, uint(s.height))
	if !removed {
		return s
	}
	t := linkSet{root: root, height: s.height, n: s.n - 1}
	if t.n <= smallMax/2 {
		vals := make([]uint32, 0, t.n)
		t.each(func(x uint32) { vals = append(vals, x) })
		return fromSorted(vals)
	}
	return t
}

// without returns the node minus v, nil when that leaves it empty.
func (n *lnode) without(v uint32, level uint) (*lnode, bool) {
	bit := uint64(1) << ((v >> (6 * level)) & 63)
	if n.bits&bit == 0 {
		return n, false
	}
	pos := bits.OnesCount64(n.bits & (bit - 1))
	if level == 1 {
		leafBit := uint64(1) << (v & 63)
		if n.leaves[pos]&leafBit == 0 {
			return n, false
		}
		if leaf := n.leaves[pos] &^ leafBit; leaf != 0 {
			c := &lnode{bits: n.bits, leaves: slices.Clone(n.leaves)}
			c.leaves[pos] = leaf
			return c, true
		}
		if n.bits == bit {
			return nil, true
		}
		return &lnode{bits: n.bits &^ bit, leaves: slices.Delete(slices.Clone(n.leaves), pos, pos+1)}, true
	}
	kid, removed := n.kids[pos].without(v, level-1)
	if !removed {
		return n, false
	}
	if kid != nil {
		c := &lnode{bits: n.bits, kids: slices.Clone(n.kids)}
		c.kids[pos] = kid
		return c, true
	}
	if n.bits == bit {
		return nil, true
	}
	return &lnode{bits: n.bits &^ bit, kids: slices.Delete(slices.Clone(n.kids), pos, pos+1)}, true
}

// each calls fn for every number in the set, in increasing order.
func (s *linkSet) each(fn func(uint32)) {
	if s.root == nil {
		for _, x := range s.members() {
			fn(x)
		}
		return
	}
	s.root.each(uint(s.height), 0, fn)
}

func (n *lnode) each(level uint, prefix uint32, fn func(uint32)) {
	for b, i := n.bits, 0; b != 0; b &= b - 1 {
		idx := uint32(bits.TrailingZeros64(b))
		p := prefix | idx<<(6*level)
		if level == 1 {
			for leaf := n.leaves[i]; leaf != 0; leaf &= leaf - 1 {
				fn(p | uint32(bits.TrailingZeros64(leaf)))
			}
		} else {
			n.kids[i].each(level-1, p, fn)
		}
		i++
	}
}
