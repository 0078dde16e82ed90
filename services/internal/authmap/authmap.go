// Package authmap is the edge gateway's auth map: every key (by the SHA-256
// of its secret) and every deployment (by project and name, with its auth
// toggle, linked keys, upstream, status and regions), folded from the event
// stream, and the one function that holds the rules of who gets in.
//
// It does no I/O: a caller feeds it the stream's records with Apply, in
// order, and asks it questions. The gateway asks Decide on every request;
// the audit service replays history into a Map and asks CheckKey.
//
// Concurrency: one goroutine applies records while any number of
// goroutines decide. The decision path takes no lock and allocates
// nothing. Keys live in an open-addressing table whose 32-byte slots hold
// 128 bits of the key's hash (see keyTable for why that is enough), its
// number, project, expiry and deleted flag inline, as atomic words, in
// memory on huge pages outside the Go heap once the table is big;
// deployments in an open-addressing table of tagged pointers to immutable
// states. Applying a record builds the new states aside, then publishes
// them inside a sequence lock (a counter that is odd while publishing), and
// a decision that overlapped a publication is simply decided again. So a
// request never sees half a record, and publishing is a handful of stores,
// not the whole record's work. A deployment's linked keys are inline when
// few, else a persistent set, so a change copies O(log n) of it.
//
// A rotated key (KeyRotated) has a slot per secret, all with the key's
// number: the secrets a rotation replaced are marked rotated and carry the
// end of their grace period as their expiry, so the decision that refuses
// an expired key refuses them by the clock too, at no extra cost.
package authmap

import (
	"cmp"
	"math"
	"net/url"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/apikey"
)

// keyRec is what the map keeps about one life of a key beyond what a
// decision reads: for the snapshot, CheckKey and applying later events.
type keyRec struct {
	sum     apikey.Hash
	id      keyID
	name    string
	project uint32
	deleted bool
	expires int64
}

func (k *keyRec) info(num uint32) keyInfo {
	return keyInfo{num: num, project: k.project, deleted: k.deleted, expires: k.expires}
}

// recChunk is how many keyRecs one allocation holds: growing by chunks
// never copies the records nor leaves half a slice unused.
const recChunk = 1 << 12

// Map is the auth map. The zero value is not usable; call New.
type Map struct {
	// gen is a sequence lock: odd while a record is being published.
	gen     atomic.Uint64
	applied atomic.Uint64
	keys    *keyTable
	deps    *depTable

	// mu serializes Apply and guards the fields below, which the decision
	// path never reads.
	mu       sync.RWMutex
	names    *nameIndex // the number of the latest life of each key name
	recs     [][]keyRec // by key number, in chunks of recChunk
	nkeys    uint32
	projects map[string]uint32
	projName []string
	// depNames are the project and name of every deployment life, by
	// its number (depState.num), for usage reports.
	depNames [][2]string
	// dels are the numbers of the deleted keys, in the order they were
	// deleted: a key's deleted flag is the one part of its record that
	// changes, and Save reads the records without holding mu.
	dels []uint32
	// rots are the rotations, in the order they were applied; a key's
	// record keeps its first secret, and rotations are appended here
	// instead of changing it, for the same reason. Entries never change.
	rots []rotation
	// lastRot is, for each rotated key's number, 1 + the index in rots of
	// its latest rotation.
	lastRot map[uint32]uint32
	// exps are the expiry changes (KeyExpiryChanged), in the order they
	// were applied; a key's record keeps the expiry it was created with,
	// for the same reason. Entries never change.
	exps []expiryChange
	// expNow is, for each key whose expiry changed, its current expiry
	// (0: never). Read and written under mu.
	expNow map[uint32]int64
}

// expiryChange is one KeyExpiryChanged as the map keeps it.
type expiryChange struct {
	num     uint32
	expires int64 // 0: never
}

// info is what a decision reads about key num, with its current expiry.
func (m *Map) info(num uint32) keyInfo {
	info := m.rec(num).info(num)
	if exp, ok := m.expNow[num]; ok {
		info.expires = exp
	}
	return info
}

// rotation is one KeyRotated as the map keeps it.
type rotation struct {
	sum apikey.Hash // the new secret's
	num uint32      // the key's number
	// prev is 1 + the index in rots of the key's rotation before this
	// one; 0 when this is its first.
	prev uint32
	// notAfter is when the secret this rotation replaced stops (Unix
	// nanoseconds; 1: at once). Secrets replaced earlier stop no later.
	notAfter int64
}

// New returns an empty map.
func New() *Map {
	return &Map{
		keys:     newKeyTable(),
		deps:     newDepTable(),
		names:    newNameIndex(),
		projects: map[string]uint32{},
		lastRot:  map[uint32]uint32{},
	}
}

func (m *Map) rec(num uint32) *keyRec { return &m.recs[num/recChunk][num%recChunk] }

// Applied is the sequence of the last record applied; 0 before any.
func (m *Map) Applied() uint64 { return m.applied.Load() }

// Apply folds one record — the events of one stream message, sharing its
// sequence — into the map, atomically: a decision sees all of it or none.
// Records must come in stream order; one at or below Applied is ignored
// (so resuming a feed may repeat records) and Apply reports false.
// Events that do not fit the map's state (an id that is not the current
// life's, a link to a deleted key) are ignored, as the aggregates do.
func (m *Map) Apply(sequence uint64, events []*eventv1.Event) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if sequence <= m.applied.Load() {
		return false
	}
	var st stage
	for _, e := range events {
		m.stageEvent(&st, e)
	}
	m.gen.Add(1)
	for _, num := range st.keys {
		m.publishKey(num)
	}
	for _, d := range st.deps {
		m.deps.put(d)
	}
	m.applied.Store(sequence)
	m.gen.Add(1)
	return true
}

// publishKey puts every secret of key num in the key table: its current
// one with the key's state, and each one a rotation replaced with the end
// of its grace period — the earliest notAfter of the rotations since it
// was replaced, and never past the key's own expiry. Only Apply, install
// and Clone call it, inside the sequence lock.
func (m *Map) publishKey(num uint32) {
	k := m.rec(num)
	info := m.info(num)
	r := m.lastRot[num]
	if r == 0 {
		w := sumWords(&k.sum)
		m.keys.put(&w, info)
		return
	}
	rot := &m.rots[r-1]
	w := sumWords(&rot.sum)
	m.keys.put(&w, info)
	end := int64(math.MaxInt64)
	for {
		end = min(end, rot.notAfter)
		old := &k.sum // the secret rot replaced
		if rot.prev != 0 {
			old = &m.rots[rot.prev-1].sum
		}
		fi := info
		if info.expires == 0 || end < info.expires {
			fi.expires, fi.rotated = end, true
		}
		w := sumWords(old)
		m.keys.put(&w, fi)
		if rot.prev == 0 {
			return
		}
		rot = &m.rots[rot.prev-1]
	}
}

// rotateKey records a rotation of key num, given a new secret hash and the
// time the replaced secret stops (a time at or before the rotation's own
// means at once, whatever a gateway's clock says).
func (m *Map) rotateKey(st *stage, num uint32, sum apikey.Hash, notAfter, at int64) {
	if notAfter <= at {
		notAfter = 1
	}
	m.rots = append(m.rots, rotation{sum: sum, num: num, prev: m.lastRot[num], notAfter: notAfter})
	m.lastRot[num] = uint32(len(m.rots))
	st.keys = append(st.keys, num)
}

// stage is what a record changes, built aside before it is published.
type stage struct {
	keys []uint32    // numbers of keys whose record changed
	deps []*depState // private copies, changed in place until published
}

func (m *Map) projectID(project string) uint32 {
	if id, ok := m.projects[project]; ok {
		return id
	}
	id := uint32(len(m.projName))
	m.projects[project] = id
	m.projName = append(m.projName, project)
	return id
}

// newKey gives a key life its number and record.
func (m *Map) newKey(st *stage, k keyRec) {
	num := m.nkeys
	if num%recChunk == 0 {
		m.recs = append(m.recs, make([]keyRec, recChunk))
	}
	m.nkeys++
	*m.rec(num) = k
	m.names.put(m, num)
	st.keys = append(st.keys, num)
}

func (m *Map) deleteKey(st *stage, num uint32) {
	m.rec(num).deleted = true
	m.dels = append(m.dels, num)
	st.keys = append(st.keys, num)
}

// liveKey returns the number of the live key project/name.
func (m *Map) liveKey(project uint32, name string) (uint32, bool) {
	num, ok := m.names.get(m, project, name)
	if !ok || m.rec(num).deleted {
		return 0, false
	}
	return num, true
}

// stagedDep returns a private copy of the live deployment project/name
// whose id is id, staging it; nil when there is none.
func (m *Map) stagedDep(st *stage, project, name, id string) *depState {
	for i := len(st.deps) - 1; i >= 0; i-- {
		if d := st.deps[i]; d.project == project && d.name == name {
			if !d.live || d.id != id {
				return nil
			}
			return d
		}
	}
	cur := m.deps.get(m.deps.hash(project, name), project, name)
	if cur == nil || !cur.live || cur.id != id {
		return nil
	}
	c := *cur
	st.deps = append(st.deps, &c)
	return &c
}

// newDep is a new life of deployment project/name, with its number.
func (m *Map) newDep(project, name string, pid uint32) *depState {
	d := newDepState(project, name, pid)
	d.num = uint32(len(m.depNames))
	m.depNames = append(m.depNames, [2]string{project, name})
	return d
}

// replaceDep stages d as the deployment's new life.
func replaceDep(st *stage, d *depState) {
	for i, s := range st.deps {
		if s.project == d.project && s.name == d.name {
			st.deps[i] = d
			return
		}
	}
	st.deps = append(st.deps, d)
}

// linkedKey returns the number of the live key a link event names: a link
// holds for the key id it names, so a key deleted (and perhaps created
// again under the same name) is not linked by it.
func (m *Map) linkedKey(d *depState, name, id string) (uint32, bool) {
	num, ok := m.liveKey(d.projectID, name)
	if !ok || !m.rec(num).id.is(id) {
		return 0, false
	}
	return num, true
}

// pruneLinks drops deleted keys from a small link set, so a deployment
// whose keys are rotated does not collect dead links.
func (m *Map) pruneLinks(d *depState) {
	if d.links.root != nil {
		return
	}
	for _, num := range d.links.members() {
		if m.rec(num).deleted {
			d.links = d.links.without(num)
		}
	}
}

func (m *Map) stageEvent(st *stage, e *eventv1.Event) {
	project := e.GetProject()
	aggName := e.GetAggregate().GetName()
	switch p := e.GetPayload().(type) {
	case *eventv1.Event_KeyCreated:
		c := p.KeyCreated
		if len(c.GetSecretSha256()) != len(apikey.Hash{}) {
			return
		}
		pid := m.projectID(project)
		if old, ok := m.liveKey(pid, c.GetName()); ok {
			// A new life of the name ends the old one, as in the aggregate.
			m.deleteKey(st, old)
		}
		k := keyRec{id: makeKeyID(c.GetKeyId()), name: c.GetName(), project: pid}
		copy(k.sum[:], c.GetSecretSha256())
		if c.GetExpiresAt() != nil {
			k.expires = unixNano(c.GetExpiresAt().AsTime())
		}
		m.newKey(st, k)

	case *eventv1.Event_KeyDeleted:
		pid, ok := m.projects[project]
		if !ok {
			return
		}
		if num, ok := m.liveKey(pid, aggName); ok && m.rec(num).id.is(p.KeyDeleted.GetKeyId()) {
			m.deleteKey(st, num)
		}

	case *eventv1.Event_KeyExpiryChanged:
		x := p.KeyExpiryChanged
		pid, ok := m.projects[project]
		if !ok {
			return
		}
		if num, ok := m.liveKey(pid, aggName); ok && m.rec(num).id.is(x.GetKeyId()) {
			var expires int64
			if x.GetExpiresAt() != nil {
				expires = unixNano(x.GetExpiresAt().AsTime())
			}
			m.exps = append(m.exps, expiryChange{num: num, expires: expires})
			if m.expNow == nil {
				m.expNow = make(map[uint32]int64)
			}
			m.expNow[num] = expires
			st.keys = append(st.keys, num)
		}

	case *eventv1.Event_KeyRotated:
		r := p.KeyRotated
		pid, ok := m.projects[project]
		if !ok || len(r.GetSecretSha256()) != len(apikey.Hash{}) || r.GetOldSecretNotAfter() == nil {
			return
		}
		if num, ok := m.liveKey(pid, aggName); ok && m.rec(num).id.is(r.GetKeyId()) {
			var sum apikey.Hash
			copy(sum[:], r.GetSecretSha256())
			m.rotateKey(st, num, sum, unixNano(r.GetOldSecretNotAfter().AsTime()), e.GetTime().AsTime().UnixNano())
		}

	case *eventv1.Event_DeploymentCreated:
		c := p.DeploymentCreated
		pid := m.projectID(project)
		d := m.newDep(m.projName[pid], c.GetName(), pid)
		d.live = true
		d.status = eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYING
		d.id = c.GetDeploymentId()
		d.model = c.GetModel()
		d.setUpstream(c.GetUpstreamUrl())
		d.regions = slices.Clone(c.GetRegions())
		replaceDep(st, d)

	case *eventv1.Event_DeploymentStatusChanged:
		if d := m.stagedDep(st, project, aggName, p.DeploymentStatusChanged.GetDeploymentId()); d != nil {
			d.status = p.DeploymentStatusChanged.GetStatus()
		}

	case *eventv1.Event_DeploymentAuthEnabled:
		if d := m.stagedDep(st, project, aggName, p.DeploymentAuthEnabled.GetDeploymentId()); d != nil {
			d.auth = true
		}

	case *eventv1.Event_DeploymentAuthDisabled:
		if d := m.stagedDep(st, project, aggName, p.DeploymentAuthDisabled.GetDeploymentId()); d != nil {
			d.auth = false
		}

	case *eventv1.Event_KeyLinked:
		l := p.KeyLinked
		if d := m.stagedDep(st, project, aggName, l.GetDeploymentId()); d != nil {
			if num, ok := m.linkedKey(d, l.GetKeyName(), l.GetKeyId()); ok {
				m.pruneLinks(d)
				d.links = d.links.with(num)
			}
		}

	case *eventv1.Event_KeyUnlinked:
		l := p.KeyUnlinked
		if d := m.stagedDep(st, project, aggName, l.GetDeploymentId()); d != nil {
			if num, ok := m.linkedKey(d, l.GetKeyName(), l.GetKeyId()); ok {
				d.links = d.links.without(num)
			}
			m.pruneLinks(d)
		}

	case *eventv1.Event_DeploymentDeleted:
		if d := m.stagedDep(st, project, aggName, p.DeploymentDeleted.GetDeploymentId()); d != nil {
			// Keep a tombstone in the table, without what it held.
			t := newDepState(d.project, d.name, d.projectID)
			t.id, t.num = d.id, d.num
			*d = *t
		}
	}
}

// unixNano is t in Unix nanoseconds, 0 never being a valid expiry and
// times past 2262 meaning never.
func unixNano(t time.Time) int64 {
	if t.After(time.Unix(0, math.MaxInt64)) {
		return 0
	}
	if n := t.UnixNano(); n != 0 {
		return n
	}
	return 1
}

// Decision is the gateway's answer for one request.
type Decision struct {
	Result Result
	Reason Reason
	// Upstream is where to proxy an allowed request: shared and read-only,
	// never to be modified. Nil when the request is refused, or when the
	// deployment's upstream URL is unusable.
	Upstream *url.URL
	// Deployment and Key say whose request it was, for usage counts: the
	// deployment's and the key's numbers in this map plus one (0: none;
	// Names turns them into names). Key is set only when the deployment
	// checks keys and the key is one of its project's, whatever the
	// answer (a refused key is counted as refused).
	Deployment, Key uint32
}

// Names returns the project, deployment name and key name ("" for none)
// of a Decision's Deployment and Key numbers. ok is false when the
// numbers are not of this map.
func (m *Map) Names(deployment, key uint32) (project, depName, keyName string, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if deployment == 0 || int(deployment) > len(m.depNames) || key > m.nkeys {
		return "", "", "", false
	}
	dn := m.depNames[deployment-1]
	if key != 0 {
		k := m.rec(key - 1)
		if m.projName[k.project] != dn[0] {
			return "", "", "", false
		}
		keyName = k.name
	}
	return dn[0], dn[1], keyName, true
}

// keyRef is the key a question is about.
type keyRef struct {
	reason Reason // why there is nothing to look up: missing or malformed
	sum    [4]uint64
	// found and info are the key's state, looked up in the table (fetch)
	// or given (CheckKey, under m.mu).
	given bool
	found bool
	info  keyInfo
}

// rawKey checks and hashes a header value. A malformed key is refused
// before any hashing.
func rawKey(raw string) keyRef {
	switch {
	case raw == "":
		return keyRef{reason: ReasonMissingKey}
	case !apikey.WellFormed(raw):
		return keyRef{reason: ReasonMalformedKey}
	}
	h := apikey.Sum(raw)
	return keyRef{sum: sumWords(&h)}
}

// fetch looks the key up in the table.
func (r *keyRef) fetch(m *Map) {
	if r.reason == 0 && !r.given {
		r.info, r.found = m.keys.get(&r.sum)
	}
}

// judge holds the rules. Every question — Decide, CheckHash, CheckKey —
// comes through it.
func (m *Map) judge(d *depState, region string, key *keyRef, now int64) Reason {
	if !d.serves(region) {
		return ReasonUnknownDeployment
	}
	r := ReasonAuthDisabled
	if d.auth {
		k := key.info
		switch {
		case key.reason != 0:
			r = key.reason
		case !key.found || k.project != d.projectID:
			// A key of another project is unknown here: a client is never
			// told that its key exists elsewhere.
			r = ReasonUnknownKey
		case k.deleted:
			r = ReasonDeleted
		case k.expires != 0 && now >= k.expires:
			r = ReasonExpired
			if k.rotated {
				r = ReasonRotated
			}
		case !d.links.contains(k.num):
			r = ReasonNotLinked
		default:
			r = ReasonLinked
		}
	}
	if r.Allowed() && d.status != eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED {
		return ReasonNotReady
	}
	return r
}

// decide runs judge against one consistent state: if a record was
// published while it ran, it runs again.
//
// Memory latency, not arithmetic, is most of a decision's cost over a big
// map, so the key is looked up before the deployment whether or not the
// deployment turns out to check keys: the two lookups' cache misses then
// overlap instead of following each other.
func (m *Map) decide(h uint64, project, deployment, region string, key *keyRef, now int64) Decision {
	for {
		g := m.gen.Load()
		if g&1 != 0 {
			runtime.Gosched()
			continue
		}
		key.fetch(m)
		d := m.deps.get(h, project, deployment)
		r := m.judge(d, region, key, now)
		if m.gen.Load() != g {
			continue
		}
		dec := Decision{Result: r.Result(), Reason: r}
		if r.Allowed() {
			dec.Upstream = d.upstream
		}
		if d != nil && d.live {
			dec.Deployment = d.num + 1
			if d.auth && key.found && key.info.project == d.projectID {
				dec.Key = key.info.num + 1
			}
		}
		return dec
	}
}

// Decide answers a request to deployment of project, at a gateway of
// region, carrying key (the raw header value; "" for none), at time now. A
// malformed key is refused without hashing it; a well-formed one is hashed
// even when the deployment turns out not to check keys (see decide).
// region "" serves every deployment. It takes no lock and does not
// allocate.
func (m *Map) Decide(project, deployment, region, key string, now time.Time) Decision {
	h := m.deps.hash(project, deployment)
	// Start the deployment slot's cache miss, then check and hash the key
	// while it is in flight.
	m.deps.touch(h)
	ref := rawKey(key)
	return m.decide(h, project, deployment, region, &ref, now.UnixNano())
}

// CheckHash is the reason a key with the secret hash h would or would not
// get into the deployment at time at, in any region.
func (m *Map) CheckHash(project, deployment string, h apikey.Hash, at time.Time) Reason {
	ref := keyRef{sum: sumWords(&h)}
	return m.decide(m.deps.hash(project, deployment), project, deployment, "", &ref, at.UnixNano()).Reason
}

// CheckKey is the reason the key named keyName (its latest life, deleted
// or not) would or would not get into the deployment at time at, in any
// region.
func (m *Map) CheckKey(project, deployment, keyName string, at time.Time) Reason {
	m.mu.RLock()
	defer m.mu.RUnlock()
	ref := keyRef{given: true}
	if pid, ok := m.projects[project]; ok {
		if num, ok := m.names.get(m, pid, keyName); ok {
			ref.found, ref.info = true, m.info(num)
		}
	}
	// No record is published while mu is held, so one pass is consistent.
	d := m.deps.get(m.deps.hash(project, deployment), project, deployment)
	return m.judge(d, "", &ref, at.UnixNano())
}

// Snapshot is the map's whole state at one sequence.
type Snapshot struct {
	// Sequence is the last record applied.
	Sequence uint64
	// Keys is the latest life of every key name, deleted or not, by
	// project and name.
	Keys []Key
	// Deployments is every live deployment, by project and name.
	Deployments []Deployment
}

// Key is one key in a Snapshot.
type Key struct {
	Project string
	Name    string
	ID      string
	// ExpiresAt is zero when the key never expires.
	ExpiresAt time.Time
	Deleted   bool
}

// Deployment is one deployment in a Snapshot.
type Deployment struct {
	Project     string
	Name        string
	ID          string
	Model       string
	UpstreamURL string
	// Regions is empty when every region serves it.
	Regions     []string
	Status      eventv1.DeploymentStatus
	AuthEnabled bool
	// Keys are the live keys linked to it, by name.
	Keys []LinkedKey
}

// LinkedKey is a key linked to a deployment.
type LinkedKey struct {
	Name string
	ID   string
}

// Snapshot returns a copy of the whole state. It costs O(size); it is for
// the audit service and for debugging, not for the request path.
func (m *Map) Snapshot() Snapshot {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s := Snapshot{Sequence: m.applied.Load()}
	m.names.each(func(num uint32) {
		k := m.rec(num)
		key := Key{Project: m.projName[k.project], Name: k.name, ID: k.id.String(), Deleted: k.deleted}
		if exp := m.info(num).expires; exp != 0 {
			key.ExpiresAt = time.Unix(0, exp).UTC()
		}
		s.Keys = append(s.Keys, key)
	})
	slices.SortFunc(s.Keys, func(a, b Key) int {
		return cmp.Or(cmp.Compare(a.Project, b.Project), cmp.Compare(a.Name, b.Name))
	})
	m.deps.each(func(d *depState) {
		if !d.live {
			return
		}
		dep := Deployment{
			Project:     d.project,
			Name:        d.name,
			ID:          d.id,
			Model:       d.model,
			UpstreamURL: d.rawURL,
			Regions:     slices.Clone(d.regions),
			Status:      d.status,
			AuthEnabled: d.auth,
		}
		d.links.each(func(num uint32) {
			if k := m.rec(num); !k.deleted {
				dep.Keys = append(dep.Keys, LinkedKey{Name: k.name, ID: k.id.String()})
			}
		})
		slices.SortFunc(dep.Keys, func(a, b LinkedKey) int { return cmp.Compare(a.Name, b.Name) })
		s.Deployments = append(s.Deployments, dep)
	})
	slices.SortFunc(s.Deployments, func(a, b Deployment) int {
		return cmp.Or(cmp.Compare(a.Project, b.Project), cmp.Compare(a.Name, b.Name))
	})
	return s
}
