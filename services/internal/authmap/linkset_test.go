package authmap

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestLinkSet checks the persistent set against a plain map through random
// changes, small and large, dense and sparse, and checks that every old
// version still holds exactly what it held.
func TestLinkSet(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		max    uint32
		ops    int
		remove float64
	}{
		{"small", 64, 2_000, 0.4},
		{"dense", 5_000, 20_000, 0.3},
		{"sparse", 1 << 31, 20_000, 0.3},
		{"shrinking", 1_000, 5_000, 0.7},
		{"full range", ^uint32(0), 5_000, 0.2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := rand.New(rand.NewPCG(1, uint64(tc.max)))
			var s linkSet
			model := map[uint32]bool{}
			type version struct {
				set  linkSet
				want []uint32
			}
			var versions []version
			var members []uint32
			for i := range tc.ops {
				var v uint32
				if len(members) > 0 && r.Float64() < tc.remove {
					v = members[r.IntN(len(members))]
					s = s.without(v)
					delete(model, v)
				} else {
					v = uint32(r.Uint64N(uint64(tc.max) + 1))
					s = s.with(v)
					model[v] = true
				}
				if s.contains(v) != model[v] {
					t.Fatalf("op %d: contains(%d) = %v, want %v", i, v, s.contains(v), model[v])
				}
				if s.len() != len(model) {
					t.Fatalf("op %d: len = %d, want %d", i, s.len(), len(model))
				}
				if i%97 == 0 {
					members = members[:0]
					for x := range model {
						members = append(members, x)
					}
					slices.Sort(members)
					versions = append(versions, version{s, slices.Clone(members)})
				}
			}
			for i, ver := range versions {
				var got []uint32
				ver.set.each(func(x uint32) { got = append(got, x) })
				if !slices.Equal(got, ver.want) {
					t.Fatalf("version %d changed: %d members, want %d", i, len(got), len(ver.want))
				}
				for _, x := range ver.want {
					if !ver.set.contains(x) {
						t.Fatalf("version %d lost %d", i, x)
					}
				}
				for range 200 {
					x := uint32(r.Uint64N(uint64(tc.max) + 1))
					if _, in := slices.BinarySearch(ver.want, x); ver.set.contains(x) != in {
						t.Fatalf("version %d: contains(%d) = %v", i, x, !in)
					}
				}
			}
		})
	}
}

func TestLinkSetEdges(t *testing.T) {
	t.Parallel()
	var s linkSet
	for _, v := range []uint32{0, 63, 64, 4095, 4096, 1 << 24, ^uint32(0)} {
		if s.contains(v) {
			t.Fatalf("empty set contains %d", v)
		}
	}
	// Grow a trie past smallMax with large values, then shrink it back.
	var vals []uint32
	for i := range 3 * smallMax {
		v := uint32(i) * 0x01010101
		vals = append(vals, v)
		s = s.with(v)
	}
	if s.root == nil {
		t.Fatal("a large set is still a slice")
	}
	for _, v := range vals {
		if !s.contains(v) || s.contains(v+1) {
			t.Fatalf("contains around %d wrong", v)
		}
	}
	for _, v := range vals {
		s = s.without(v)
	}
	if s.len() != 0 || s.root != nil || len(s.members()) != 0 {
		t.Fatalf("emptied set: %+v", s)
	}
}
