package faults_test

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
)

// replay is what the stream says, read message by message.
type replay struct {
	// keys counts KeyCreated per project/name; live holds the keys not
	// deleted since.
	created map[string]int
	live    map[string]bool
	// deployments: live deployments by project/name.
	deployments map[string]bool
	last        uint64
}

// replayStream reads the whole stream now.
func (s *stack) replayStream() replay {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	st, err := s.js.Stream(ctx, streamName)
	if err != nil {
		s.t.Fatalf("replay: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		s.t.Fatalf("replay: %v", err)
	}
	r := replay{created: map[string]int{}, live: map[string]bool{}, deployments: map[string]bool{}, last: info.State.LastSeq}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		msg, err := st.GetMsg(ctx, seq)
		if err != nil {
			s.t.Fatalf("replay: message %d: %v", seq, err)
		}
		// infergate.events.<project>.<type>.<name>
		parts := strings.SplitN(msg.Subject, ".", 5)
		if len(parts) != 5 {
			continue
		}
		id := parts[2] + "/" + parts[4]
		var b eventv1.Batch
		if err := proto.Unmarshal(msg.Data, &b); err != nil {
			s.t.Fatalf("replay: message %d: %v", seq, err)
		}
		for _, e := range b.GetEvents() {
			switch {
			case e.GetKeyCreated() != nil:
				r.created[id]++
				r.live[id] = true
			case e.GetKeyDeleted() != nil:
				delete(r.live, id)
			case e.GetDeploymentCreated() != nil:
				r.deployments[id] = true
			case e.GetDeploymentDeleted() != nil:
				delete(r.deployments, id)
			}
		}
	}
	return r
}

// liveKeys is the sorted names of the project's live keys.
func (r replay) liveKeys(project string) []string {
	return namesIn(r.live, project)
}

func (r replay) liveDeployments(project string) []string {
	return namesIn(r.deployments, project)
}

func namesIn(m map[string]bool, project string) []string {
	var out []string
	for id := range m {
		if p, name, _ := strings.Cut(id, "/"); p == project {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// duplicates is every name in names more than once.
func duplicates(names []string) []string {
	seen := map[string]int{}
	var dup []string
	for _, n := range names {
		if seen[n]++; seen[n] == 2 {
			dup = append(dup, n)
		}
	}
	return dup
}

// diff says what a has that b lacks and the other way round, briefly.
func diff(a, b []string) string {
	inA, inB := map[string]bool{}, map[string]bool{}
	for _, x := range a {
		inA[x] = true
	}
	for _, x := range b {
		inB[x] = true
	}
	var onlyA, onlyB []string
	for x := range inA {
		if !inB[x] {
			onlyA = append(onlyA, x)
		}
	}
	for x := range inB {
		if !inA[x] {
			onlyB = append(onlyB, x)
		}
	}
	slices.Sort(onlyA)
	slices.Sort(onlyB)
	return fmt.Sprintf("%d only in the first %s, %d only in the second %s", len(onlyA), brief(onlyA), len(onlyB), brief(onlyB))
}

func brief(xs []string) string {
	if len(xs) > 5 {
		return fmt.Sprint(xs[:5]) + "…"
	}
	return fmt.Sprint(xs)
}
