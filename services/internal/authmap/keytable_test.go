package authmap

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"
)

// TestKeyTableGrowsUnderReaders puts keys into a table that lives off the
// Go heap from its first slot, so it grows (and retires its old mappings)
// many times, while readers look up keys already put, under a sequence
// lock like the Map's. Every lookup that the lock accepts must find its
// key with the right number.
func TestKeyTableGrowsUnderReaders(t *testing.T) {
	const n = 100_000
	kt := newKeyTableOffHeap(0)
	if kt.mem == nil || len(kt.mem.maps) != 1 {
		t.Fatal("the table's first slots are not off the heap")
	}
	r := rand.New(rand.NewPCG(1, 2))
	sums := make([][4]uint64, n)
	for i := range sums {
		sums[i] = [4]uint64{r.Uint64(), r.Uint64(), r.Uint64(), r.Uint64()}
	}
	var gen, done atomic.Uint64
	var wg sync.WaitGroup
	var checked atomic.Int64
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rr := rand.New(rand.NewPCG(uint64(g), 9))
			for {
				have := done.Load()
				if have == n {
					return
				}
				if have == 0 {
					runtime.Gosched()
					continue
				}
				i := rr.IntN(int(have))
				s := gen.Load()
				if s&1 != 0 {
					runtime.Gosched()
					continue
				}
				k, ok := kt.get(&sums[i])
				if gen.Load() != s {
					continue
				}
				if !ok || k.num != uint32(i) || k.project != uint32(i)%7 {
					t.Errorf("key %d: got %+v, %v", i, k, ok)
					return
				}
				checked.Add(1)
			}
		}()
	}
	for i := range sums {
		gen.Add(1)
		kt.put(&sums[i], keyInfo{num: uint32(i), project: uint32(i) % 7, expires: int64(i)})
		gen.Add(1)
		done.Store(uint64(i + 1))
		if i%1024 == 0 {
			runtime.Gosched() // let the readers in, grows included
		}
	}
	wg.Wait()
	t.Logf("%d lookups checked", checked.Load())

	slots := *kt.slots.Load()
	if p := uintptr(unsafe.Pointer(&slots[0])); p%hugePage != 0 {
		t.Errorf("slots at %#x, not huge-page aligned", p)
	}
	if got, want := kt.offHeapBytes(), (len(slots)*keySlotSize+hugePage-1)&^(hugePage-1); got != want {
		t.Errorf("offHeapBytes = %d, want %d", got, want)
	}
	live := 0
	for _, mp := range kt.mem.maps {
		if !mp.released {
			live++
		}
	}
	if live != 1 || len(kt.mem.maps) < 10 {
		t.Errorf("%d mappings, %d not released; want many, 1", len(kt.mem.maps), live)
	}
	for i := range sums {
		if k, ok := kt.get(&sums[i]); !ok || k.num != uint32(i) || k.expires != int64(i) {
			t.Fatalf("key %d after growing: %+v, %v", i, k, ok)
		}
	}
	// Replacing keeps one slot per key.
	before := kt.n
	kt.put(&sums[3], keyInfo{num: 3, deleted: true})
	if k, _ := kt.get(&sums[3]); !k.deleted || kt.n != before {
		t.Errorf("replace: %+v, n %d → %d", k, before, kt.n)
	}
}

// TestKeyTableOnHeapWhenSmall: a new map's table is an ordinary heap
// object, and a reader of a retired mapping sees empty slots.
func TestKeyTableOnHeapWhenSmall(t *testing.T) {
	if kt := newKeyTable(); kt.mem != nil || kt.offHeapBytes() != 0 {
		t.Error("a small table is off the heap")
	}
	kt := newKeyTableOffHeap(0)
	old := *kt.slots.Load()
	w := [4]uint64{42, 43}
	kt.put(&w, keyInfo{num: 1})
	if len(kt.mem.maps) != 1 {
		t.Skip("no off-heap memory on this system")
	}
	for i := range 1000 {
		v := [4]uint64{uint64(i) << 40, 7}
		kt.put(&v, keyInfo{num: uint32(i)})
	}
	if len(kt.mem.maps) < 2 || !kt.mem.maps[0].released {
		t.Fatalf("the first mapping was not retired: %+v", kt.mem.maps)
	}
	for i := range old {
		if old[i].meta.Load() != 0 {
			t.Fatalf("retired slot %d still reads as used", i)
		}
	}
}
