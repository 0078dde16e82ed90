package authmap_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/authmap"
)

// history makes n records of a random but plausible life: keys created,
// deleted and created again under the same names (some expiring, some
// with non-UUID ids), deployments created, deleted and created again,
// links and unlinks (some deployments with more keys than a small link set
// holds), auth toggled, statuses changed, regions.
type history struct {
	r        *rand.Rand
	seq      uint64
	keys     map[[2]string]string // project/name -> id of the live life
	secrets  []string
	deps     map[[2]string]string // project/name -> id of the live life
	nextID   int
	projects []string
}

func newHistory(seed uint64) *history {
	return &history{
		r:        rand.New(rand.NewPCG(seed, seed)),
		keys:     map[[2]string]string{},
		deps:     map[[2]string]string{},
		projects: []string{"team-a", "team-b", "a-project-with-a-rather-long-name-that-does-not-fit-inline"},
	}
}

func (h *history) id(uuid bool) string {
	h.nextID++
	if uuid {
		return "00000000-0000-4000-8000-" + itoa(100000000000+h.nextID)
	}
	return "id-" + itoa(h.nextID)
}

func (h *history) record() []*eventv1.Event {
	p := h.projects[h.r.IntN(len(h.projects))]
	key := [2]string{p, "key-" + itoa(h.r.IntN(120))}
	dep := [2]string{p, "dep-" + itoa(h.r.IntN(6))}
	if id, ok := h.keys[key]; ok && h.r.IntN(10) == 0 {
		// A rotation whose replaced secret stops before, between or after
		// the times sameAnswers asks about, or at once.
		secret := fastSecret(h.r)
		h.secrets = append(h.secrets, secret)
		notAfter := t0.Add(time.Duration(h.r.IntN(4*3600)-3600) * time.Second)
		if h.r.IntN(5) == 0 {
			notAfter = time.Unix(1_700_000_000, 0) // the event's own time: at once
		}
		return []*eventv1.Event{keyRotated(p, key[1], id, secret, notAfter)}
	}
	if id, ok := h.keys[key]; ok && h.r.IntN(10) == 0 {
		// An expiry change: before, between or after the times
		// sameAnswers asks about, or none.
		var exp time.Time
		if h.r.IntN(3) != 0 {
			exp = t0.Add(time.Duration(h.r.IntN(4*3600)-3600) * time.Second)
		}
		return []*eventv1.Event{keyExpiryChanged(p, key[1], id, exp)}
	}
	switch n := h.r.IntN(20); {
	case n < 6:
		id := h.id(h.r.IntN(4) != 0)
		secret := fastSecret(h.r)
		h.secrets = append(h.secrets, secret)
		var exp time.Time
		if h.r.IntN(3) == 0 {
			exp = t0.Add(time.Duration(h.r.IntN(7200)-3600) * time.Second)
		}
		h.keys[key] = id
		return []*eventv1.Event{keyCreated(p, key[1], id, secret, exp)}
	case n < 7:
		if id, ok := h.keys[key]; ok {
			delete(h.keys, key)
			return []*eventv1.Event{keyDeleted(p, key[1], id)}
		}
	case n < 8:
		id := h.id(true)
		var regions []string
		if h.r.IntN(2) == 0 {
			regions = []string{"eu-west", "us-east"}[:1+h.r.IntN(2)]
		}
		h.deps[dep] = id
		return []*eventv1.Event{depCreated(p, dep[1], id, "http://up-"+itoa(h.r.IntN(3))+".test:8000/v", regions...)}
	case n < 9:
		if id, ok := h.deps[dep]; ok && h.r.IntN(4) == 0 {
			delete(h.deps, dep)
			return []*eventv1.Event{depDeleted(p, dep[1], id)}
		}
	case n < 10:
		if id, ok := h.deps[dep]; ok {
			s := []eventv1.DeploymentStatus{
				eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED,
				eventv1.DeploymentStatus_DEPLOYMENT_STATUS_FAILED,
				eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED,
			}[h.r.IntN(3)]
			return []*eventv1.Event{depStatus(p, dep[1], id, s)}
		}
	case n < 11:
		if id, ok := h.deps[dep]; ok {
			if h.r.IntN(3) == 0 {
				return []*eventv1.Event{authDisabled(p, dep[1], id)}
			}
			return []*eventv1.Event{authEnabled(p, dep[1], id)}
		}
	case n < 18:
		// Link several keys at once, so some deployments' sets grow big.
		if id, ok := h.deps[dep]; ok {
			var evs []*eventv1.Event
			for range 1 + h.r.IntN(8) {
				k := [2]string{p, "key-" + itoa(h.r.IntN(120))}
				if kid, ok := h.keys[k]; ok {
					evs = append(evs, linked(p, dep[1], id, k[1], kid))
				}
			}
			if len(evs) > 0 {
				return evs
			}
		}
	default:
		if id, ok := h.deps[dep]; ok {
			if kid, ok := h.keys[key]; ok {
				return []*eventv1.Event{unlinked(p, dep[1], id, key[1], kid)}
			}
		}
	}
	return h.record()
}

// apply applies n more records to every map.
func (h *history) apply(n int, maps ...*authmap.Map) {
	for range n {
		h.seq++
		r := h.record()
		for _, m := range maps {
			m.Apply(h.seq, r)
		}
	}
}

// sameAnswers fails unless a and b hold the same state and give the same
// answer for every deployment, key and region, before and after expiries.
func sameAnswers(t *testing.T, h *history, a, b *authmap.Map) {
	t.Helper()
	if diff := snapshotDiff(a.Snapshot(), b.Snapshot()); diff != "" {
		t.Fatal(diff)
	}
	if a.Applied() != b.Applied() {
		t.Fatalf("Applied %d and %d", a.Applied(), b.Applied())
	}
	secrets := append([]string{"", "not-a-key", h.secrets[0] + "x"}, h.secrets...)
	for _, p := range h.projects {
		for i := range 6 {
			d := "dep-" + itoa(i)
			for _, at := range []time.Time{t0, t0.Add(2 * time.Hour)} {
				for _, region := range []string{"", "eu-west", "ap-south"} {
					for _, s := range secrets {
						da, db := a.Decide(p, d, region, s, at), b.Decide(p, d, region, s, at)
						if da.Result != db.Result || da.Reason != db.Reason ||
							(da.Upstream == nil) != (db.Upstream == nil) ||
							(da.Upstream != nil && da.Upstream.String() != db.Upstream.String()) {
							t.Fatalf("%s/%s region %q at %v: %+v and %+v", p, d, region, at, da, db)
						}
					}
				}
				for k := range 120 {
					name := "key-" + itoa(k)
					if ra, rb := a.CheckKey(p, d, name, at), b.CheckKey(p, d, name, at); ra != rb {
						t.Fatalf("CheckKey %s/%s %s: %v and %v", p, d, name, ra, rb)
					}
				}
			}
		}
	}
}

// snapshotDiff describes the first difference between a and b; "" when
// they are the same.
func snapshotDiff(a, b authmap.Snapshot) string {
	if a.Sequence != b.Sequence || len(a.Keys) != len(b.Keys) || len(a.Deployments) != len(b.Deployments) {
		return fmt.Sprintf("sequence %d/%d, %d/%d keys, %d/%d deployments",
			a.Sequence, b.Sequence, len(a.Keys), len(b.Keys), len(a.Deployments), len(b.Deployments))
	}
	for i := range a.Keys {
		if a.Keys[i] != b.Keys[i] {
			return fmt.Sprintf("key %d: %+v and %+v", i, a.Keys[i], b.Keys[i])
		}
	}
	for i := range a.Deployments {
		if da, db := a.Deployments[i], b.Deployments[i]; !reflect.DeepEqual(da, db) {
			return fmt.Sprintf("deployment %d:\n%#v\n%#v", i, da, db)
		}
	}
	return ""
}

func saved(t *testing.T, m *authmap.Map) []byte {
	t.Helper()
	var buf bytes.Buffer
	seq, err := m.Save(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if seq != m.Applied() {
		t.Fatalf("Save returned sequence %d, map at %d", seq, m.Applied())
	}
	return buf.Bytes()
}

func TestSaveRestore(t *testing.T) {
	t.Parallel()
	h := newHistory(1)
	orig := authmap.New()
	h.apply(3000, orig)
	snap := saved(t, orig)

	restored := authmap.New()
	if err := restored.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	sameAnswers(t, h, orig, restored)
	if seq, err := authmap.SnapshotSequence(bytes.NewReader(snap)); err != nil || seq != orig.Applied() {
		t.Errorf("SnapshotSequence = %d, %v; want %d", seq, err, orig.Applied())
	}

	// The restored map goes on from there exactly as the original does.
	h.apply(2000, orig, restored)
	sameAnswers(t, h, orig, restored)
	// A record at or below the snapshot's sequence is ignored.
	if restored.Apply(1, []*eventv1.Event{keyCreated(proj, "late", "kl", secretA, time.Time{})}) {
		t.Error("a record below the snapshot's sequence was applied")
	}

	// Saving the restored map gives the same bytes as saving the original.
	if !bytes.Equal(saved(t, orig), saved(t, restored)) {
		t.Error("the restored map saves differently from the original")
	}
}

func TestSaveRestoreEmpty(t *testing.T) {
	t.Parallel()
	m := authmap.New()
	if err := m.Restore(bytes.NewReader(saved(t, authmap.New()))); err != nil {
		t.Fatal(err)
	}
	if m.Applied() != 0 || m.Size() != 0 {
		t.Errorf("Applied %d, Size %d", m.Applied(), m.Size())
	}
}

func TestRestoreRejectsBadSnapshots(t *testing.T) {
	t.Parallel()
	h := newHistory(2)
	orig := authmap.New()
	h.apply(500, orig)
	good := saved(t, orig)

	var bad [][]byte
	for _, n := range []int{0, 1, 10, len(good) / 2, len(good) - 5, len(good) - 1} {
		bad = append(bad, good[:n]) // truncated
	}
	for _, i := range []int{0, 20, len(good) / 3, len(good) - 2} {
		b := bytes.Clone(good)
		b[i] ^= 0x40 // one bit flipped
		bad = append(bad, b)
	}
	bad = append(bad, append(bytes.Clone(good), 0)) // trailing garbage

	for i, b := range bad {
		m := authmap.New()
		err := m.RestoreBytes(b)
		if !errors.Is(err, authmap.ErrBadSnapshot) {
			t.Errorf("case %d: err = %v, want ErrBadSnapshot", i, err)
		}
		if m.Applied() != 0 || m.Size() != 0 {
			t.Errorf("case %d: a bad snapshot changed the map: Applied %d, Size %d", i, m.Applied(), m.Size())
		}
		// The map is still usable: a replay from the start works.
		m.Apply(1, []*eventv1.Event{keyCreated(proj, "alpha", "ka", secretA, time.Time{})})
		if m.Applied() != 1 {
			t.Errorf("case %d: map unusable after a bad snapshot", i)
		}
	}

	// A map that has applied records is not restored into.
	m := authmap.New()
	m.Apply(1, base()[0])
	if err := m.RestoreBytes(good); err == nil {
		t.Error("Restore into a used map succeeded")
	}
	if m.Applied() != 1 {
		t.Errorf("Applied = %d after a refused restore", m.Applied())
	}
}

// TestSaveWhileApplying saves while records are applied and decisions
// made (run it with -race): each snapshot is the map as it was at the
// sequence it reports, whatever happened during the save.
func TestSaveWhileApplying(t *testing.T) {
	t.Parallel()
	h := newHistory(3)
	live := authmap.New()
	var records [][]*eventv1.Event
	for range 4000 {
		records = append(records, h.record())
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		defer close(done)
		for i, r := range records {
			live.Apply(uint64(i+1), r)
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
				live.Decide("team-a", "dep-1", "", h.secrets[0], t0)
			}
		}
	})
	var snaps [][]byte
	for {
		var buf bytes.Buffer
		if _, err := live.Save(&buf); err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, buf.Bytes())
		select {
		case <-done:
		default:
			continue
		}
		break
	}
	wg.Wait()

	for _, snap := range snaps {
		got := authmap.New()
		if err := got.RestoreBytes(snap); err != nil {
			t.Fatal(err)
		}
		want := authmap.New()
		for i, r := range records[:got.Applied()] {
			want.Apply(uint64(i+1), r)
		}
		if diff := snapshotDiff(got.Snapshot(), want.Snapshot()); diff != "" {
			t.Fatalf("snapshot at %d differs from the replay to %d: %s", got.Applied(), got.Applied(), diff)
		}
	}
	t.Logf("%d snapshots checked", len(snaps))
}
