package authmap

import "unsafe"

// offHeapMin is the smallest key table kept outside the Go heap: below a
// few huge pages a table is cheap to reach anyway, and the many small maps
// (tests, the audit service's checkpoints) stay ordinary heap objects.
const offHeapMin = 4 << 20

// hugePage is the size of a transparent huge page (x86-64, arm64 with 4 KiB
// base pages). Mappings are this aligned and sized.
const hugePage = 2 << 20

// slotMem is the key table's memory outside the Go heap: anonymous
// mappings, advised to use transparent huge pages, so a lookup over a big
// table does not also miss the TLB. Only the table's one writer calls
// alloc and retire.
//
// Freeing: readers are lock-free and unregistered, so after a grow there
// is no telling when the last reader has stopped probing the old slots (a
// goroutine can be descheduled in the middle of a probe for as long as the
// scheduler likes). Unmapping them would turn that reader's next load into
// a crash. So retire only releases an old mapping's pages (MADV_DONTNEED):
// the range stays mapped, a late reader reads zeros — an empty slot, so
// its probe ends — and the sequence lock, which the grow happened inside,
// has it decide again on the new slots. The address ranges are unmapped
// together, by free, once the table itself is unreachable (readers keep it
// alive while they probe). What that costs is address space, not memory:
// with growth by 1.5 the retired ranges add up to twice the current one.
type slotMem struct {
	maps []mapping
}

type mapping struct {
	full     []byte // as mapped, to unmap
	slots    []byte // the aligned part that holds slots
	released bool
}

// alloc maps n zeroed slots; nil when it cannot.
func (m *slotMem) alloc(n int) []keySlot {
	size := (n*keySlotSize + hugePage - 1) &^ (hugePage - 1)
	// Map one huge page more than needed and use the aligned part: the
	// slack is never touched, so it costs no memory.
	full, err := mapAnon(size + hugePage)
	if err != nil {
		return nil
	}
	off := int(-uintptr(unsafe.Pointer(&full[0])) & (hugePage - 1))
	b := full[off : off+size]
	adviseHuge(b)
	m.maps = append(m.maps, mapping{full: full, slots: b})
	return unsafe.Slice((*keySlot)(unsafe.Pointer(&b[0])), n)
}

// retire releases the pages of the mapping that holds old, if one does.
func (m *slotMem) retire(old []keySlot) {
	p := unsafe.Pointer(&old[0])
	for i := range m.maps {
		if mp := &m.maps[i]; !mp.released && unsafe.Pointer(&mp.slots[0]) == p {
			release(mp.slots)
			mp.released = true
		}
	}
}

// resident is the bytes of the mappings in use (not retired).
func (m *slotMem) resident() int {
	n := 0
	for _, mp := range m.maps {
		if !mp.released {
			n += len(mp.slots)
		}
	}
	return n
}

// free unmaps everything; nothing may use the slots any more.
func (m *slotMem) free() {
	for _, mp := range m.maps {
		unmap(mp.full)
	}
	m.maps = nil
}

// OffHeapBytes is the memory the map holds outside the Go heap (its key
// table's slots, once big), which runtime.MemStats does not count: add it
// to HeapAlloc to see all of the map's memory.
func (m *Map) OffHeapBytes() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.keys.offHeapBytes()
}
