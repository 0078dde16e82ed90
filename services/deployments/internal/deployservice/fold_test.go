package deployservice

import (
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/eventstore"
)

// history makes n records of one deployment's life: created, links and
// unlinks, auth and status changes, deleted and created again.
func history(r *rand.Rand, n int, firstSeq uint64, t0 time.Time) []eventstore.Record {
	var recs []eventstore.Record
	id := ""
	for i := range n {
		ev := &eventv1.Event{Time: timestamppb.New(t0)}
		switch k := r.IntN(20); {
		case id == "" || k == 0:
			id = "d" + strconv.Itoa(i)
			ev.Payload = &eventv1.Event_DeploymentCreated{DeploymentCreated: &eventv1.DeploymentCreated{DeploymentId: id, Name: "chat", Regions: []string{"eu"}}}
		case k == 1:
			ev.Payload = &eventv1.Event_DeploymentDeleted{DeploymentDeleted: &eventv1.DeploymentDeleted{DeploymentId: id}}
			id = ""
		case k == 2:
			ev.Payload = &eventv1.Event_DeploymentAuthEnabled{DeploymentAuthEnabled: &eventv1.DeploymentAuthEnabled{DeploymentId: id}}
		case k == 3:
			ev.Payload = &eventv1.Event_DeploymentStatusChanged{DeploymentStatusChanged: &eventv1.DeploymentStatusChanged{DeploymentId: id, Status: eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED}}
		case k < 12:
			key := "k" + strconv.Itoa(r.IntN(30))
			ev.Payload = &eventv1.Event_KeyLinked{KeyLinked: &eventv1.KeyLinked{DeploymentId: id, KeyName: key, KeyId: "id-" + key}}
		default:
			key := "k" + strconv.Itoa(r.IntN(30))
			ev.Payload = &eventv1.Event_KeyUnlinked{KeyUnlinked: &eventv1.KeyUnlinked{DeploymentId: id, KeyName: key, KeyId: "id-" + key}}
		}
		recs = append(recs, eventstore.Record{Sequence: firstSeq + uint64(i)*3, Time: t0.Add(time.Duration(i) * time.Millisecond), Events: []*eventv1.Event{ev}})
	}
	return recs
}

// TestFoldsMatchAFullFold: whatever prefixes of a history commands see —
// growing, shrinking (a stale read), or another life of the stream with
// the same sequences — the kept state gives what folding everything gives.
func TestFoldsMatchAFullFold(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	t0 := time.Unix(1_800_000_000, 0)
	recs := history(r, 3000, 5, t0)
	// The stream deleted and created again: same sequences, other records.
	again := history(r, 3000, 5, t0.Add(time.Hour))
	var f folds
	check := func(what string, prefix []eventstore.Record) {
		t.Helper()
		got := f.fold("subj", "chat", prefix)
		want := aggregate.DeploymentFrom("chat", eventstore.Events(prefix))
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s (%d records): %+v, want %+v", what, len(prefix), got, want)
		}
	}
	for n := 0; n <= len(recs); n += 1 + r.IntN(40) {
		check("growing", recs[:n])
	}
	check("shrunk", recs[:1000])
	check("grown again", recs[:2500])
	check("another life of the stream", again[:2600])
	check("and on", again)
	// What a caller got is not changed by later folds.
	got := f.fold("subj", "chat", recs[:2000])
	snapshot := got.Clone()
	f.fold("subj", "chat", recs)
	if !reflect.DeepEqual(got, snapshot) {
		t.Fatal("a later fold changed an earlier result")
	}
}
