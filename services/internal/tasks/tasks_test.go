package tasks_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	propagationv1 "github.com/infergate/infergate/gen/infergate/propagation/v1"
	taskv1 "github.com/infergate/infergate/gen/infergate/task/v1"
	"github.com/infergate/infergate/services/internal/tasks"
)

// gateways is a propagation.Waiter whose one gateway applies what the
// test says, when it says.
type gateways struct {
	mu      sync.Mutex // mu protects applied
	applied uint64
	changed chan struct{}
}

func (g *gateways) apply(seq uint64) {
	g.mu.Lock()
	g.applied = seq
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()
}

func (g *gateways) Wait(ctx context.Context, seq uint64, _ []string, timeout time.Duration) *propagationv1.Propagation {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		g.mu.Lock()
		applied, changed := g.applied, g.changed
		g.mu.Unlock()
		if applied >= seq {
			return &propagationv1.Propagation{Sequence: seq, Gateways: 1, GatewaysApplied: 1, Confirmed: true}
		}
		select {
		case <-ctx.Done():
			return &propagationv1.Propagation{Sequence: seq, Gateways: 1, Lagging: []*propagationv1.LaggingGateway{{Id: "gw-1", Region: "eu", AppliedSequence: applied}}}
		case <-changed:
		}
	}
}

func waitState(t *testing.T, r *tasks.Registry, id string, want taskv1.TaskState) *taskv1.Task {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		task, ok := r.Get(id)
		if !ok {
			t.Fatalf("task %s is gone", id)
		}
		if task.GetState() == want {
			return task
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s is %v, want %v", id, task.GetState(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTaskFollowsTheReceipt: a task is RUNNING until the gateways apply
// its change, FINISHED then, and ERROR, naming the laggard, when they do
// not within its bound.
func TestTaskFollowsTheReceipt(t *testing.T) {
	t.Parallel()
	gw := &gateways{changed: make(chan struct{})}
	r := tasks.New(tasks.Config{Waiter: gw, Bound: 500 * time.Millisecond})
	t.Cleanup(r.Close)

	done := r.Start(tasks.UpdateDeployment, "team-a", nil, &propagationv1.Propagation{Sequence: 1, Confirmed: true})
	if task := waitState(t, r, done, taskv1.TaskState_TASK_STATE_FINISHED); task.GetFinishedOn() == nil || task.GetTaskType() != tasks.UpdateDeployment || task.GetProject() != "team-a" {
		t.Errorf("a confirmed change's task = %v", task)
	}

	running := r.Start(tasks.CreateAPIKey, "team-a", nil, &propagationv1.Propagation{Sequence: 5})
	if task, _ := r.Get(running); task.GetState() != taskv1.TaskState_TASK_STATE_RUNNING {
		t.Fatalf("an unconfirmed change's task = %v, want RUNNING", task)
	}
	gw.apply(5)
	waitState(t, r, running, taskv1.TaskState_TASK_STATE_FINISHED)

	late := r.Start(tasks.DeleteDeployment, "team-a", []string{"eu"}, &propagationv1.Propagation{Sequence: 9})
	task := waitState(t, r, late, taskv1.TaskState_TASK_STATE_ERROR)
	if !strings.Contains(task.GetError(), "gw-1 (eu) at 5") {
		t.Errorf("ERROR task says %q, want the lagging gateway named", task.GetError())
	}
	gw.apply(9)
	if task, _ := r.Get(late); task.GetState() != taskv1.TaskState_TASK_STATE_ERROR {
		t.Errorf("a task past its bound went back to %v", task.GetState())
	}
}

// TestTasksAreBounded: tasks expire after their bound and TTL, and the
// oldest go first past Max.
func TestTasksAreBounded(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := tasks.New(tasks.Config{Bound: time.Second, TTL: time.Minute, Max: 3, Now: clock})
	t.Cleanup(r.Close)
	confirmed := &propagationv1.Propagation{Sequence: 1, Confirmed: true}
	var ids []string
	for range 4 {
		ids = append(ids, r.Start(tasks.UpdateDeployment, "p", nil, confirmed))
	}
	if _, ok := r.Get(ids[0]); ok {
		t.Error("the oldest of 4 tasks is kept with Max 3")
	}
	for _, id := range ids[1:] {
		if _, ok := r.Get(id); !ok {
			t.Errorf("task %s is gone too early", id)
		}
	}
	mu.Lock()
	now = now.Add(time.Second + time.Minute)
	mu.Unlock()
	for _, id := range ids {
		if _, ok := r.Get(id); ok {
			t.Errorf("task %s outlived its bound and TTL", id)
		}
	}
}
