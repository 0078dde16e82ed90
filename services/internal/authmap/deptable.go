package authmap

import (
	"hash/maphash"
	"net/url"
	"sync/atomic"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
)

// depState is one version of one life of a deployment: immutable once
// published; every record that changes it publishes a new version. The
// fields a decision reads come first, with the names and the link set's
// header and inline keys next, so a decision reads two or three cache
// lines of it (at the state's start, read together) and follows no
// pointer for a deployment with up to inlineMax keys. It is 296 bytes, in
// the allocator's 320-byte class, whose objects are 64-byte aligned.
type depState struct {
	plen, nlen uint8 // lengths of project and name in names, when inline
	inline     bool
	live       bool
	auth       bool
	status     eventv1.DeploymentStatus
	projectID  uint32
	// num is the life's number (Map.depNames), which a Decision carries
	// so that usage is counted without a string in sight.
	num      uint32
	names    [64]byte // project then name, when they fit
	links    linkSet
	upstream *url.URL // nil when the URL in the event is unusable
	regions  []string // empty: every region

	project string
	name    string
	id      string
	model   string
	rawURL  string
}

func newDepState(project, name string, projectID uint32) *depState {
	d := &depState{project: project, name: name, projectID: projectID}
	if len(project)+len(name) <= len(d.names) {
		d.inline = true
		d.plen, d.nlen = uint8(len(project)), uint8(len(name))
		copy(d.names[copy(d.names[:], project):], name)
	}
	return d
}

// setUpstream keeps the deployment's upstream URL, and the parsed URL
// when it is usable.
func (d *depState) setUpstream(raw string) {
	d.rawURL = raw
	if u, err := url.Parse(raw); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		d.upstream = u
	}
}

// is reports whether d is the deployment project/name, reading only d's
// own memory when the names are inline.
func (d *depState) is(project, name string) bool {
	if d.inline {
		return len(project) == int(d.plen) && len(name) == int(d.nlen) &&
			string(d.names[:d.plen]) == project && string(d.names[d.plen:int(d.plen)+int(d.nlen)]) == name
	}
	return d.project == project && d.name == name
}

// serves reports whether the deployment is live and served in region ("":
// any region).
func (d *depState) serves(region string) bool {
	if d == nil || !d.live {
		return false
	}
	if region == "" || len(d.regions) == 0 {
		return true
	}
	for _, r := range d.regions {
		if r == region {
			return true
		}
	}
	return false
}

// depTable finds a deployment by project and name: open addressing over
// slots of a hash tag and a pointer to the immutable state, so probing
// past other deployments reads no state but theirs tags. Like keyTable it
// has one writer, lock-free readers under the Map's sequence lock, and
// never removes an entry (a deleted deployment stays as a tombstone).
type depTable struct {
	seed  maphash.Seed
	slots atomic.Pointer[[]depSlot]
	n     int // used slots; only the writer touches it
}

type depSlot struct {
	tag atomic.Uint64 // 0: empty
	d   atomic.Pointer[depState]
}

func newDepTable() *depTable {
	t := &depTable{seed: maphash.MakeSeed()}
	s := make([]depSlot, 256)
	t.slots.Store(&s)
	return t
}

// hash is the tag of project/name; never 0. The seed is random, so
// request paths cannot aim names at one slot.
func (t *depTable) hash(project, name string) uint64 {
	h := maphash.String(t.seed, project)
	h ^= maphash.String(t.seed, name) * 0x9e3779b97f4a7c15
	return h | 1
}

// touch loads h's first slot, so its cache miss is under way while the
// caller does other work.
func (t *depTable) touch(h uint64) uint64 {
	slots := *t.slots.Load()
	return slots[slotOf(h, len(slots))].tag.Load()
}

func (t *depTable) get(h uint64, project, name string) *depState {
	slots := *t.slots.Load()
	for i := slotOf(h, len(slots)); ; {
		tag := slots[i].tag.Load()
		if tag == 0 {
			return nil
		}
		if tag == h {
			if d := slots[i].d.Load(); d != nil && d.is(project, name) {
				return d
			}
		}
		if i++; i == len(slots) {
			i = 0
		}
	}
}

// put stores d, replacing the state of the same deployment. Only one
// goroutine may call it at a time, inside the sequence lock.
func (t *depTable) put(d *depState) {
	slots := *t.slots.Load()
	if (t.n+1)*4 > len(slots)*3 {
		slots = t.grow(slots)
	}
	h := t.hash(d.project, d.name)
	for i := slotOf(h, len(slots)); ; {
		s := &slots[i]
		tag := s.tag.Load()
		if tag == 0 {
			t.n++
			s.d.Store(d)
			s.tag.Store(h)
			return
		}
		if tag == h && s.d.Load().is(d.project, d.name) {
			s.d.Store(d)
			return
		}
		if i++; i == len(slots) {
			i = 0
		}
	}
}

func (t *depTable) grow(old []depSlot) []depSlot {
	slots := make([]depSlot, 2*len(old))
	for j := range old {
		tag := old[j].tag.Load()
		if tag == 0 {
			continue
		}
		i := slotOf(tag, len(slots))
		for slots[i].tag.Load() != 0 {
			if i++; i == len(slots) {
				i = 0
			}
		}
		slots[i].d.Store(old[j].d.Load())
		slots[i].tag.Store(tag)
	}
	t.slots.Store(&slots)
	return slots
}

// each calls fn for every deployment state, tombstones included.
func (t *depTable) each(fn func(*depState)) {
	slots := *t.slots.Load()
	for i := range slots {
		if d := slots[i].d.Load(); d != nil {
			fn(d)
		}
	}
}
