package authmap

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
)

// A saved map is the whole state at one stream sequence, in a compact
// binary form, so a gateway can start from it and replay only the records
// after it instead of the whole history (SPEC §1: "from the start, or from
// a snapshot"). It holds no secret: keys are kept by the SHA-256 of their
// secret, as in the events.
//
// Format (version 2), every integer an unsigned varint unless said:
//
//	magic "infergate-authmap" 0x00, version
//	sequence
//	projects: count, then each name (length, bytes)
//	keys, by number: count, then each:
//	    the 32-byte secret hash, flags (1 deleted, 2 id is a UUID),
//	    the id (16 bytes, or length and bytes), name, project number,
//	    expiry (Unix nanoseconds, 0 never)
//	rotations, in the order they were applied: count, then each:
//	    key number, the new secret's 32-byte hash, when the secret it
//	    replaced stops (Unix nanoseconds, 1 at once)
//	deployments, the live ones by project number and name: count, then each:
//	    project number, name, id, model, upstream URL, regions (count,
//	    names), status, auth (0 or 1), linked key numbers (count, then
//	    ascending, each as its difference from the one before plus 1)
//	CRC-32C of everything before it, 4 bytes big-endian
//
// Key numbers are kept (links refer to them), deleted keys and all; a
// deleted deployment is left out, which is what a tombstone decides too.
//
// Version 1 had no rotations. A version 1 snapshot is refused, not read as
// "no rotations": one saved by an older snapshotter from a stream that
// held KeyRotated events would lack them (the old code ignored them), and
// a gateway would then accept a replaced secret forever. A gateway that
// finds one replays the stream from the start instead, and the
// snapshotter replaces it with a version 2 one at its next save.
const (
	snapshotMagic   = "infergate-authmap\x00"
	snapshotVersion = 2

	flagDeleted = 1
	flagUUID    = 2

	// maxString bounds every string read from a snapshot.
	maxString = 1 << 16
)

// ErrBadSnapshot wraps every reason a snapshot cannot be restored.
var ErrBadSnapshot = errors.New("authmap: bad snapshot")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Save writes the map's state, as of the last record applied, to w and
// returns that record's sequence: SavePoint, then WriteTo.
func (m *Map) Save(w io.Writer) (uint64, error) {
	p := m.SavePoint()
	if _, err := p.WriteTo(w); err != nil {
		return 0, err
	}
	return p.Sequence(), nil
}

// A SavePoint is the map's state at one sequence, ready to be written.
type SavePoint struct {
	seq      uint64
	nkeys    uint32
	recs     [][]keyRec
	projName []string
	dels     []uint32
	rots     []rotation
	exps     []expiryChange
	deps     []*depState
}

// SavePoint notes what a snapshot of the map as of the last record applied
// is made of. It holds the map's lock only for that — the number of keys,
// the deployments' current states, the deletions so far: a few
// milliseconds for a million keys —, so records go on being applied, and
// decisions made, while the snapshot is written.
func (m *Map) SavePoint() *SavePoint {
	m.mu.RLock()
	defer m.mu.RUnlock()
	p := &SavePoint{
		seq:      m.applied.Load(),
		nkeys:    m.nkeys,
		recs:     m.recs,     // chunks never move; records below nkeys only get deleted
		projName: m.projName, // names below len never change
		dels:     m.dels,     // append-only
		rots:     m.rots,     // append-only, entries never change
		exps:     m.exps,     // append-only, entries never change
	}
	m.deps.each(func(d *depState) { // published states are immutable
		if d.live {
			p.deps = append(p.deps, d)
		}
	})
	return p
}

// Sequence is the sequence of the last record applied at the save point.
func (p *SavePoint) Sequence() uint64 { return p.seq }

// WriteTo writes the snapshot to w.
func (p *SavePoint) WriteTo(w io.Writer) (int64, error) {
	seq, nkeys, recs, projName, deps := p.seq, p.nkeys, p.recs, p.projName, p.deps
	deleted := make([]uint64, (nkeys+63)/64)
	for _, num := range p.dels {
		deleted[num/64] |= 1 << (num % 64)
	}
	rec := func(num uint32) *keyRec { return &recs[num/recChunk][num%recChunk] }
	// A changed expiry is written as the key's expiry: a restored map
	// starts from it as if the key had been created with it.
	expNow := make(map[uint32]int64, len(p.exps))
	for _, x := range p.exps {
		expNow[x.num] = x.expires
	}
	// The same state makes the same bytes, whatever the tables' layout.
	slices.SortFunc(deps, func(a, b *depState) int {
		return cmp.Or(cmp.Compare(a.projectID, b.projectID), cmp.Compare(a.name, b.name))
	})

	crc := crc32.New(castagnoli)
	cw := &countingWriter{w: w}
	e := encoder{w: bufio.NewWriterSize(io.MultiWriter(cw, crc), 256<<10)}
	e.raw([]byte(snapshotMagic))
	e.uint(snapshotVersion)
	e.uint(seq)
	e.uint(uint64(len(projName)))
	for _, p := range projName {
		e.str(p)
	}
	e.uint(uint64(nkeys))
	for num := range nkeys {
		// Field by field: the deleted flag is written by Apply and read
		// from the bitmap instead.
		k := rec(num)
		e.raw(k.sum[:])
		var flags byte
		if deleted[num/64]&(1<<(num%64)) != 0 {
			flags |= flagDeleted
		}
		if k.id.isUUID {
			flags |= flagUUID
		}
		e.raw([]byte{flags})
		if k.id.isUUID {
			e.raw(k.id.uuid[:])
		} else {
			e.str(k.id.other)
		}
		e.str(k.name)
		e.uint(uint64(k.project))
		exp := k.expires
		if x, ok := expNow[num]; ok {
			exp = x
		}
		e.uint(uint64(exp))
	}
	e.uint(uint64(len(p.rots)))
	for i := range p.rots {
		r := &p.rots[i]
		e.uint(uint64(r.num))
		e.raw(r.sum[:])
		e.uint(uint64(r.notAfter))
	}
	e.uint(uint64(len(deps)))
	var links []uint32
	for _, d := range deps {
		e.uint(uint64(d.projectID))
		e.str(d.name)
		e.str(d.id)
		e.str(d.model)
		e.str(d.rawURL)
		e.uint(uint64(len(d.regions)))
		for _, r := range d.regions {
			e.str(r)
		}
		e.uint(uint64(d.status))
		if d.auth {
			e.uint(1)
		} else {
			e.uint(0)
		}
		links = links[:0]
		d.links.each(func(num uint32) { links = append(links, num) })
		slices.Sort(links)
		e.uint(uint64(len(links)))
		next := uint32(0) // the least the next number can be
		for _, num := range links {
			e.uint(uint64(num - next))
			next = num + 1
		}
	}
	if e.err == nil {
		e.err = e.w.Flush()
	}
	if e.err == nil {
		_, e.err = cw.Write(crc.Sum(nil))
	}
	if e.err != nil {
		return cw.n, fmt.Errorf("authmap: save: %w", e.err)
	}
	return cw.n, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

type encoder struct {
	w   *bufio.Writer
	buf [binary.MaxVarintLen64]byte
	err error
}

func (e *encoder) raw(b []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(b)
	}
}

func (e *encoder) uint(v uint64) { e.raw(binary.AppendUvarint(e.buf[:0], v)) }

func (e *encoder) str(s string) {
	e.uint(uint64(len(s)))
	if e.err == nil {
		_, e.err = e.w.WriteString(s)
	}
}

// Restore reads a snapshot written by Save (all of it, into memory) and
// loads it into m; see RestoreBytes.
func (m *Map) Restore(r io.Reader) error {
	s, err := readSnapshot(r)
	if err != nil {
		return err
	}
	return m.install(s)
}

// RestoreBytes loads a snapshot written by Save into m, which must be new (no
// record applied): m then is as if it had applied the stream up to the
// snapshot's sequence, and goes on with Apply from the record after it.
// The whole snapshot is read and checked (its checksum, every number and
// reference in it) before m is touched, so a bad one — wrapping
// ErrBadSnapshot — leaves m empty.
func (m *Map) RestoreBytes(b []byte) error {
	s, err := decodeSnapshot(b)
	if err != nil {
		return err
	}
	return m.install(s)
}

func (m *Map) install(s *snapshotData) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.applied.Load() != 0 || m.nkeys != 0 || len(m.projName) != 0 {
		return errors.New("authmap: restore into a map that is not new")
	}
	m.gen.Add(1)
	for _, p := range s.projects {
		m.projectID(p)
	}
	m.recs, m.nkeys = s.recs, s.nkeys
	for _, r := range s.rots {
		r.prev = m.lastRot[r.num]
		m.rots = append(m.rots, r)
		m.lastRot[r.num] = uint32(len(m.rots))
	}
	for num := range s.nkeys {
		k := m.rec(num)
		m.names.put(m, num)
		if k.deleted {
			m.dels = append(m.dels, num)
		}
		m.publishKey(num)
	}
	for _, d := range s.deps {
		d.num = uint32(len(m.depNames))
		m.depNames = append(m.depNames, [2]string{d.project, d.name})
		m.deps.put(d)
	}
	m.applied.Store(s.sequence)
	m.gen.Add(1)
	return nil
}

// SnapshotSequence reads only the header of a snapshot: the sequence it
// was saved at.
func SnapshotSequence(r io.Reader) (uint64, error) {
	var head [len(snapshotMagic) + 2*binary.MaxVarintLen64]byte
	n, err := io.ReadFull(r, head[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return 0, fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	d := decoder{b: head[:n]}
	return d.header()
}

type snapshotData struct {
	sequence uint64
	projects []string
	recs     [][]keyRec
	nkeys    uint32
	rots     []rotation
	deps     []*depState
}

func readSnapshot(r io.Reader) (*snapshotData, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	return decodeSnapshot(b)
}

func decodeSnapshot(b []byte) (*snapshotData, error) {
	if len(b) < len(snapshotMagic)+4 {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrBadSnapshot, len(b))
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[len(body):]) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	d := decoder{b: body}
	s := &snapshotData{}
	s.sequence, _ = d.header()
	nproj := d.count(1 << 29) // packMeta's bits for a project
	seen := map[string]bool{}
	for range nproj {
		p := d.str()
		if seen[p] {
			d.fail("project %q twice", p)
		}
		seen[p] = true
		s.projects = append(s.projects, p)
	}
	nkeys := d.count(1<<32 - 1)
	for num := uint64(0); num < nkeys && d.err == nil; num++ {
		if num%recChunk == 0 {
			s.recs = append(s.recs, make([]keyRec, recChunk))
		}
		k := &s.recs[num/recChunk][num%recChunk]
		d.raw(k.sum[:])
		flags := d.byte()
		if flags&^(flagDeleted|flagUUID) != 0 {
			d.fail("key %d: unknown flags %#x", num, flags)
		}
		k.deleted = flags&flagDeleted != 0
		if flags&flagUUID != 0 {
			k.id.isUUID = true
			d.raw(k.id.uuid[:])
		} else {
			k.id.other = d.str()
		}
		k.name = d.str()
		k.project = uint32(d.ref(nproj, "project"))
		k.expires = int64(d.uint())
	}
	s.nkeys = uint32(nkeys)
	nrots := d.count(uint64(len(body)))
	for i := uint64(0); i < nrots && d.err == nil; i++ {
		var r rotation
		r.num = uint32(d.ref(nkeys, "rotated key"))
		d.raw(r.sum[:])
		na := d.uint()
		if d.err == nil && (na == 0 || na > math.MaxInt64) {
			d.fail("rotation %d: end of grace %d out of range", i, na)
		}
		r.notAfter = int64(na)
		s.rots = append(s.rots, r)
	}
	ndeps := d.count(uint64(len(body)))
	var links []uint32
	for i := uint64(0); i < ndeps && d.err == nil; i++ {
		pid := uint32(d.ref(nproj, "project"))
		var project string
		if d.err == nil {
			project = s.projects[pid]
		}
		dep := newDepState(project, d.str(), pid)
		dep.live = true
		dep.id = d.str()
		dep.model = d.str()
		dep.setUpstream(d.str())
		for range d.count(1 << 16) {
			dep.regions = append(dep.regions, d.str())
		}
		dep.status = eventv1.DeploymentStatus(d.ref(1<<31, "status"))
		dep.auth = d.ref(2, "auth flag") == 1
		n := d.count(nkeys)
		links = links[:0]
		next := uint64(0) // the least the next key number may be
		for j := uint64(0); j < n && d.err == nil; j++ {
			num := next + d.uint()
			if num >= nkeys {
				d.fail("deployment %q: link to key %d of %d", dep.name, num, nkeys)
			}
			links = append(links, uint32(num))
			next = num + 1
		}
		if len(links) <= smallMax {
			dep.links = fromSorted(slices.Clone(links))
		} else {
			for _, num := range links {
				dep.links = dep.links.with(num)
			}
		}
		s.deps = append(s.deps, dep)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d bytes after the end", len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return s, nil
}

// decoder reads a snapshot from memory; the first problem sticks in err
// and makes every later read return zero.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrBadSnapshot}, args...)...)
	}
}

func (d *decoder) header() (uint64, error) {
	if d.err == nil && !bytes.HasPrefix(d.b, []byte(snapshotMagic)) {
		d.fail("not an auth map snapshot")
	}
	d.next(len(snapshotMagic))
	if v := d.uint(); d.err == nil && v != snapshotVersion {
		d.fail("version %d, want %d", v, snapshotVersion)
	}
	seq := d.uint()
	return seq, d.err
}

// next consumes n bytes.
func (d *decoder) next(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b) {
		d.fail("truncated")
		return nil
	}
	b := d.b[:n]
	d.b = d.b[n:]
	return b
}

func (d *decoder) raw(b []byte) { copy(b, d.next(len(b))) }

func (d *decoder) byte() byte {
	if b := d.next(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) uint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated or overlong number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of at most limit.
func (d *decoder) count(limit uint64) uint64 {
	n := d.uint()
	if n > limit {
		d.fail("count %d over %d", n, limit)
		return 0
	}
	return n
}

// ref reads a number below n.
func (d *decoder) ref(n uint64, what string) uint64 {
	v := d.uint()
	if d.err == nil && v >= n {
		d.fail("%s %d out of range", what, v)
		return 0
	}
	return v
}

func (d *decoder) str() string {
	return string(d.next(int(d.count(maxString))))
}
