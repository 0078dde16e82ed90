package authmap_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/authmap"
)

const (
	proj     = "team-a"
	dep      = "chat"
	depID    = "d1"
	upstream = "http://upstream.test:9000/base"
)

var (
	t0      = time.Unix(1_800_000_000, 0)
	secretA = mustSecret()
	secretB = mustSecret()
	secretC = mustSecret()
	// badSum has the shape of a secret but not its checksum.
	badSum = secretA[:apikey.Len-1] + flip(secretA[apikey.Len-1])
)

func mustSecret() string {
	s, err := apikey.Generate()
	if err != nil {
		panic(err)
	}
	return s
}

func flip(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}

// base: key alpha (never expires) linked to a deployed deployment with auth
// on; key bravo (expires at t0+1h) not linked.
func base() [][]*eventv1.Event {
	return [][]*eventv1.Event{
		{keyCreated(proj, "alpha", "ka", secretA, time.Time{})},
		{keyCreated(proj, "bravo", "kb", secretB, t0.Add(time.Hour))},
		{depCreated(proj, dep, depID, upstream), authEnabled(proj, dep, depID), linked(proj, dep, depID, "alpha", "ka")},
		{deployed(proj, dep, depID)},
	}
}

type check struct {
	dep     string // default dep
	project string // default proj
	region  string
	key     string // the raw header value
	keyName string // also ask CheckKey for this name
	at      time.Time
	want    authmap.Reason
}

type step struct {
	records [][]*eventv1.Event
	checks  []check
}

func TestRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		steps []step
	}{
		{"unknown deployment", []step{{base(), []check{
			{dep: "other", key: secretA, want: authmap.ReasonUnknownDeployment},
			{project: "team-b", key: secretA, want: authmap.ReasonUnknownDeployment},
		}}}},
		{"a new deployment is deploying with auth off", []step{{
			[][]*eventv1.Event{{depCreated(proj, dep, depID, upstream)}},
			[]check{
				{want: authmap.ReasonNotReady},
				{key: "whatever", want: authmap.ReasonNotReady},
			},
		}}},
		{"auth off lets every request in", []step{{
			[][]*eventv1.Event{{depCreated(proj, dep, depID, upstream)}, {deployed(proj, dep, depID)}},
			[]check{
				{want: authmap.ReasonAuthDisabled},
				{key: "garbage", want: authmap.ReasonAuthDisabled},
				{key: secretA, want: authmap.ReasonAuthDisabled},
			},
		}}},
		{"auth on", []step{{base(), []check{
			{key: "", want: authmap.ReasonMissingKey},
			{key: "garbage", want: authmap.ReasonMalformedKey},
			{key: badSum, want: authmap.ReasonMalformedKey},
			{key: secretA + " ", want: authmap.ReasonMalformedKey},
			{key: secretC, want: authmap.ReasonUnknownKey},
			{key: secretB, keyName: "bravo", want: authmap.ReasonNotLinked},
			{key: secretA, keyName: "alpha", want: authmap.ReasonLinked},
		}}}},
		{"a key of another project is unknown", []step{{
			append(base(),
				[]*eventv1.Event{keyCreated("team-b", "zulu", "kz", secretC, time.Time{})},
				// A link naming another project's key id does nothing.
				[]*eventv1.Event{linked(proj, dep, depID, "zulu", "kz")},
			),
			[]check{
				{key: secretC, want: authmap.ReasonUnknownKey},
				{key: secretC, keyName: "zulu", want: authmap.ReasonUnknownKey},
			},
		}}},
		{"expiry is checked against the time asked", []step{{
			append(base(), []*eventv1.Event{linked(proj, dep, depID, "bravo", "kb")}),
			[]check{
				{key: secretB, at: t0.Add(time.Hour - time.Nanosecond), want: authmap.ReasonLinked},
				{key: secretB, keyName: "bravo", at: t0.Add(time.Hour), want: authmap.ReasonExpired},
				{key: secretB, at: t0.Add(48 * time.Hour), want: authmap.ReasonExpired},
			},
		}}},
		{"a deleted key stops working everywhere", []step{
			{base(), []check{{key: secretA, want: authmap.ReasonLinked}}},
			{[][]*eventv1.Event{{keyDeleted(proj, "alpha", "ka")}}, []check{
				{key: secretA, keyName: "alpha", want: authmap.ReasonDeleted},
			}},
			{[][]*eventv1.Event{{authDisabled(proj, dep, depID)}, {authEnabled(proj, dep, depID)}}, []check{
				{key: secretA, want: authmap.ReasonDeleted},
			}},
		}},
		{"a key deleted and created again is a new key", []step{
			{append(base(),
				[]*eventv1.Event{keyDeleted(proj, "alpha", "ka")},
				[]*eventv1.Event{keyCreated(proj, "alpha", "ka2", secretC, time.Time{})},
			), []check{
				{key: secretC, keyName: "alpha", want: authmap.ReasonNotLinked},
				{key: secretA, want: authmap.ReasonDeleted},
			}},
			{[][]*eventv1.Event{{linked(proj, dep, depID, "alpha", "ka2")}}, []check{
				{key: secretC, keyName: "alpha", want: authmap.ReasonLinked},
				{key: secretA, want: authmap.ReasonDeleted},
			}},
		}},
		{"a link to a deleted key is ignored", []step{
			{append(base(),
				[]*eventv1.Event{keyDeleted(proj, "alpha", "ka")},
				[]*eventv1.Event{linked(proj, dep, depID, "alpha", "ka")},
			), []check{{key: secretA, want: authmap.ReasonDeleted}}},
			{[][]*eventv1.Event{
				{keyCreated(proj, "alpha", "ka2", secretC, time.Time{})},
				// The old key's id again: not the new key.
				{linked(proj, dep, depID, "alpha", "ka")},
			}, []check{{key: secretC, keyName: "alpha", want: authmap.ReasonNotLinked}}},
		}},
		{"unlink", []step{
			{append(base(), []*eventv1.Event{unlinked(proj, dep, depID, "alpha", "other-id")}), []check{
				{key: secretA, want: authmap.ReasonLinked},
			}},
			{[][]*eventv1.Event{{unlinked(proj, dep, depID, "alpha", "ka")}}, []check{
				{key: secretA, keyName: "alpha", want: authmap.ReasonNotLinked},
			}},
		}},
		{"auth off and on again", []step{
			{append(base(), []*eventv1.Event{authDisabled(proj, dep, depID)}), []check{
				{key: secretB, want: authmap.ReasonAuthDisabled},
				{want: authmap.ReasonAuthDisabled},
			}},
			{[][]*eventv1.Event{{authEnabled(proj, dep, depID)}}, []check{
				{key: secretB, want: authmap.ReasonNotLinked},
				{key: secretA, want: authmap.ReasonLinked},
			}},
		}},
		{"a deployment not deployed admits nobody, and says why only to a good key", []step{{
			append(base(), []*eventv1.Event{depStatus(proj, dep, depID, eventv1.DeploymentStatus_DEPLOYMENT_STATUS_FAILED)}),
			[]check{
				{key: secretA, keyName: "alpha", want: authmap.ReasonNotReady},
				{key: secretB, want: authmap.ReasonNotLinked},
				{want: authmap.ReasonMissingKey},
			},
		}}},
		{"regions", []step{{
			[][]*eventv1.Event{
				{depCreated(proj, dep, depID, upstream, "eu-west", "us-east")},
				{deployed(proj, dep, depID)},
				{depCreated(proj, "everywhere", "d2", upstream)},
				{deployed(proj, "everywhere", "d2")},
			},
			[]check{
				{region: "eu-west", want: authmap.ReasonAuthDisabled},
				{region: "us-east", want: authmap.ReasonAuthDisabled},
				{region: "ap-south", want: authmap.ReasonUnknownDeployment},
				{region: "", want: authmap.ReasonAuthDisabled},
				{dep: "everywhere", region: "ap-south", want: authmap.ReasonAuthDisabled},
			},
		}}},
		{"a deployment deleted and created again starts afresh", []step{
			{append(base(), []*eventv1.Event{depDeleted(proj, dep, depID)}), []check{
				{key: secretA, keyName: "alpha", want: authmap.ReasonUnknownDeployment},
			}},
			{[][]*eventv1.Event{
				{depCreated(proj, dep, "d2", upstream)},
				{deployed(proj, dep, "d2")},
				// Events of the old life are ignored.
				{authEnabled(proj, dep, depID), linked(proj, dep, depID, "alpha", "ka")},
			}, []check{
				{key: secretB, want: authmap.ReasonAuthDisabled},
			}},
			{[][]*eventv1.Event{{authEnabled(proj, dep, "d2")}}, []check{
				{key: secretA, keyName: "alpha", want: authmap.ReasonNotLinked},
			}},
		}},
		{"same names in two projects are apart", []step{{
			append(base(),
				[]*eventv1.Event{keyCreated("team-b", "alpha", "kb-alpha", secretC, time.Time{})},
				[]*eventv1.Event{depCreated("team-b", dep, "db", upstream), authEnabled("team-b", dep, "db"), linked("team-b", dep, "db", "alpha", "kb-alpha")},
				[]*eventv1.Event{deployed("team-b", dep, "db")},
			),
			[]check{
				{key: secretA, want: authmap.ReasonLinked},
				{key: secretC, want: authmap.ReasonUnknownKey},
				{project: "team-b", key: secretC, keyName: "alpha", want: authmap.ReasonLinked},
				{project: "team-b", key: secretA, want: authmap.ReasonUnknownKey},
			},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := authmap.New()
			seq := uint64(0)
			for i, s := range tt.steps {
				for _, rec := range s.records {
					seq++
					if !m.Apply(seq, rec) {
						t.Fatalf("step %d: Apply(%d) = false", i, seq)
					}
				}
				if m.Applied() != seq {
					t.Fatalf("Applied = %d, want %d", m.Applied(), seq)
				}
				for _, c := range s.checks {
					runCheck(t, m, i, c)
				}
			}
		})
	}
}

func runCheck(t *testing.T, m *authmap.Map, step int, c check) {
	t.Helper()
	if c.dep == "" {
		c.dep = dep
	}
	if c.project == "" {
		c.project = proj
	}
	if c.at.IsZero() {
		c.at = t0
	}
	d := m.Decide(c.project, c.dep, c.region, c.key, c.at)
	if d.Reason != c.want || d.Result != c.want.Result() {
		t.Errorf("step %d: Decide(%s/%s, region %q, key %.8q…) = %s/%s, want %s/%s",
			step, c.project, c.dep, c.region, c.key, d.Result, d.Reason, c.want.Result(), c.want)
	}
	if d.Result.Allowed() != (d.Upstream != nil) {
		t.Errorf("step %d: %s with upstream %v", step, d.Result, d.Upstream)
	}
	if d.Upstream != nil && d.Upstream.String() != upstream {
		t.Errorf("step %d: upstream %s, want %s", step, d.Upstream, upstream)
	}
	// The audit's questions must agree with the gateway's.
	if apikey.WellFormed(c.key) && c.region == "" {
		if got := m.CheckHash(c.project, c.dep, apikey.Sum(c.key), c.at); got != c.want {
			t.Errorf("step %d: CheckHash = %s, want %s", step, got, c.want)
		}
	}
	if c.keyName != "" && c.region == "" {
		if got := m.CheckKey(c.project, c.dep, c.keyName, c.at); got != c.want {
			t.Errorf("step %d: CheckKey(%s) = %s, want %s", step, c.keyName, got, c.want)
		}
	}
}

func TestApplyIgnoresOldRecords(t *testing.T) {
	t.Parallel()
	m := authmap.New()
	recs := base()
	for i, r := range recs {
		m.Apply(uint64(i+1), r)
	}
	// A replayed record (a feed resumed from an earlier point) changes
	// nothing, even one that would.
	if m.Apply(3, []*eventv1.Event{authDisabled(proj, dep, depID)}) {
		t.Fatal("Apply of an old sequence reported true")
	}
	if got := m.Decide(proj, dep, "", secretB, t0).Reason; got != authmap.ReasonNotLinked {
		t.Fatalf("after replaying an old record: %s", got)
	}
	if m.Applied() != uint64(len(recs)) {
		t.Fatalf("Applied = %d", m.Applied())
	}
}

func TestUnknownCheckKey(t *testing.T) {
	t.Parallel()
	m := authmap.New()
	for i, r := range base() {
		m.Apply(uint64(i+1), r)
	}
	if got := m.CheckKey("no-such-project", dep, "alpha", t0); got != authmap.ReasonUnknownDeployment {
		t.Errorf("unknown project: %s", got)
	}
	if got := m.CheckKey(proj, dep, "never-created", t0); got != authmap.ReasonUnknownKey {
		t.Errorf("unknown name: %s", got)
	}
}

func TestSnapshot(t *testing.T) {
	t.Parallel()
	m := authmap.New()
	recs := append(base(),
		[]*eventv1.Event{linked(proj, dep, depID, "bravo", "kb")},
		[]*eventv1.Event{keyDeleted(proj, "alpha", "ka")},
		[]*eventv1.Event{depCreated(proj, "gone", "dg", upstream), depDeleted(proj, "gone", "dg")},
		[]*eventv1.Event{depCreated(proj, "eu", "de", upstream, "eu-west")},
	)
	for i, r := range recs {
		m.Apply(uint64(i+1), r)
	}
	s := m.Snapshot()
	if s.Sequence != uint64(len(recs)) {
		t.Errorf("Sequence = %d", s.Sequence)
	}
	wantKeys := []authmap.Key{
		{Project: proj, Name: "alpha", ID: "ka", Deleted: true},
		{Project: proj, Name: "bravo", ID: "kb", ExpiresAt: t0.Add(time.Hour).UTC()},
	}
	if len(s.Keys) != len(wantKeys) {
		t.Fatalf("Keys = %+v", s.Keys)
	}
	for i, k := range wantKeys {
		if s.Keys[i] != k {
			t.Errorf("Keys[%d] = %+v, want %+v", i, s.Keys[i], k)
		}
	}
	if len(s.Deployments) != 2 {
		t.Fatalf("Deployments = %+v", s.Deployments)
	}
	d := s.Deployments[0]
	if d.Name != dep || d.ID != depID || !d.AuthEnabled || d.UpstreamURL != upstream ||
		d.Status != eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED || len(d.Regions) != 0 {
		t.Errorf("chat = %+v", d)
	}
	// alpha's link went with alpha.
	if len(d.Keys) != 1 || d.Keys[0] != (authmap.LinkedKey{Name: "bravo", ID: "kb"}) {
		t.Errorf("chat keys = %+v", d.Keys)
	}
	if e := s.Deployments[1]; e.Name != "eu" || len(e.Regions) != 1 || e.Regions[0] != "eu-west" ||
		e.Status != eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYING || e.AuthEnabled {
		t.Errorf("eu = %+v", e)
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	m := authmap.New()
	for i, r := range base() {
		m.Apply(uint64(i+1), r)
	}
	for _, key := range []string{secretA, secretB, secretC, "", "garbage", badSum} {
		if n := testing.AllocsPerRun(100, func() { _ = m.Decide(proj, dep, "local", key, t0) }); n != 0 {
			t.Errorf("Decide with key %.8q… allocates %v times", key, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = m.Decide(proj, "other", "local", secretA, t0) }); n != 0 {
		t.Errorf("Decide of an unknown deployment allocates %v times", n)
	}
}

// TestRecordIsAtomic applies records that each change a key and a
// deployment together while readers decide; a reader that saw half a
// record would get a reason no whole state gives.
func TestRecordIsAtomic(t *testing.T) {
	t.Parallel()
	m := authmap.New()
	m.Apply(1, []*eventv1.Event{depCreated(proj, dep, depID, upstream), deployed(proj, dep, depID)})
	seq := uint64(1)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var seen, seenToggle [16]atomic.Int64
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				seen[m.Decide(proj, dep, "", secretA, t0).Reason].Add(1)
				// Deployment-only records: auth and status change together.
				seenToggle[m.Decide(proj, "toggle", "", "", t0).Reason].Add(1)
			}
		})
	}
	m.Apply(2, []*eventv1.Event{depCreated(proj, "toggle", "t1", upstream)})
	seq = 2
	deadline := time.Now().Add(300 * time.Millisecond)
	for i := 0; time.Now().Before(deadline) || i < 2000; i++ {
		id := "k" + itoa(i)
		// Whole states: key live and linked with auth on (linked), or key
		// deleted with auth off (auth_disabled). Half of the second record
		// — deleted key, auth still on — would say "deleted".
		seq++
		m.Apply(seq, []*eventv1.Event{
			keyCreated(proj, "alpha", id, secretA, time.Time{}),
			linked(proj, dep, depID, "alpha", id),
			authEnabled(proj, dep, depID),
		})
		seq++
		m.Apply(seq, []*eventv1.Event{keyDeleted(proj, "alpha", id), authDisabled(proj, dep, depID)})
		// Whole states: auth on and DEPLOYED (missing key), auth off and
		// FAILED (not ready). Either half is auth off and DEPLOYED
		// (auth_disabled).
		seq++
		m.Apply(seq, []*eventv1.Event{authEnabled(proj, "toggle", "t1"), deployed(proj, "toggle", "t1")})
		seq++
		m.Apply(seq, []*eventv1.Event{
			authDisabled(proj, "toggle", "t1"),
			depStatus(proj, "toggle", "t1", eventv1.DeploymentStatus_DEPLOYMENT_STATUS_FAILED),
		})
	}
	stop.Store(true)
	wg.Wait()
	for r := range seen {
		reason := authmap.Reason(r)
		if n := seen[r].Load(); n > 0 && reason != authmap.ReasonLinked && reason != authmap.ReasonAuthDisabled {
			t.Errorf("%d decisions saw half a key+deployment record: %s", n, reason)
		}
		if n := seenToggle[r].Load(); n > 0 && reason != authmap.ReasonMissingKey && reason != authmap.ReasonNotReady {
			t.Errorf("%d decisions saw half a deployment record: %s", n, reason)
		}
	}
	t.Logf("during %d records: chat %s; toggle %s", seq, reasonsSeen(&seen), reasonsSeen(&seenToggle))
}

func reasonsSeen(seen *[16]atomic.Int64) string {
	var b strings.Builder
	for i := range seen {
		if n := seen[i].Load(); n > 0 {
			b.WriteString(authmap.Reason(i).String() + "=" + itoa(int(n)) + " ")
		}
	}
	return b.String()
}
