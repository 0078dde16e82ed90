// Package tasks answers a change the way the managed platform does, with a
// task id a script can poll: a task is RUNNING until every gateway serving
// the change's regions has applied it (the propagation receipt), then
// FINISHED, or ERROR when that has not happened within its bound. The
// change itself is durable from the moment the call answers; the task only
// says how far it has travelled.
//
// Tasks live in the memory of the process that made them, bounded: each
// expires a while after its bound, and the oldest are dropped first when
// there are too many.
package tasks

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	propagationv1 "github.com/infergate/infergate/gen/infergate/propagation/v1"
	taskv1 "github.com/infergate/infergate/gen/infergate/task/v1"
	"github.com/infergate/infergate/gen/infergate/task/v1/taskv1connect"
	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/propagation"
)

// Task types, as the task_type field names them.
const (
	CreateAPIKey     = "create_api_key"
	CreateDeployment = "create_deployment"
	UpdateDeployment = "update_deployment"
	DeleteDeployment = "delete_deployment"
)

// Defaults.
const (
	// DefaultBound is how long a task waits for every gateway before it is
	// ERROR. It is longer than a write call's own wait (2 s): a script that
	// polls the task is willing to wait for a gateway that is catching up.
	DefaultBound = 30 * time.Second
	// DefaultTTL is how long a task can be read after its bound.
	DefaultTTL = time.Hour
	// DefaultMax bounds how many tasks are kept.
	DefaultMax = 10_000
)

// Config tunes a Registry.
type Config struct {
	// Waiter is the gateways' receipts (a *receipts.Tracker); default
	// propagation.Unconfirmed, with which no task ever finishes.
	Waiter propagation.Waiter
	// Bound, TTL and Max default to DefaultBound, DefaultTTL, DefaultMax.
	Bound, TTL time.Duration
	Max        int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Waiter == nil {
		c.Waiter = propagation.Unconfirmed{}
	}
	if c.Bound <= 0 {
		c.Bound = DefaultBound
	}
	if c.TTL <= 0 {
		c.TTL = DefaultTTL
	}
	if c.Max <= 0 {
		c.Max = DefaultMax
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Registry holds the tasks of one process.
type Registry struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex // mu protects the fields below
	m  map[string]*task
	// order holds the ids oldest first; expired ones are dropped from the
	// front.
	order []string
}

type task struct {
	id, typ, project string
	regions          []string
	sequence         uint64
	created          time.Time
	expires          time.Time
	// The fields below change as the task follows its change.
	state    taskv1.TaskState
	finished time.Time
	err      string
	receipt  *propagationv1.Propagation
}

// New returns a registry; Close stops the tasks' waits.
func New(cfg Config) *Registry {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Registry{cfg: cfg, ctx: ctx, cancel: cancel, m: map[string]*task{}}
}

// Close ends every wait; tasks still RUNNING stay so.
func (r *Registry) Close() { r.cancel() }

// Start records a change that was appended at receipt's sequence and
// returns its task's id. A receipt already confirmed makes a FINISHED
// task; otherwise the task keeps waiting for the gateways, up to its
// bound.
func (r *Registry) Start(typ, project string, regions []string, receipt *propagationv1.Propagation) string {
	now := r.cfg.Now()
	t := &task{
		id: uuid.NewString(), typ: typ, project: project, regions: regions,
		sequence: receipt.GetSequence(), created: now, expires: now.Add(r.cfg.Bound + r.cfg.TTL),
		state: taskv1.TaskState_TASK_STATE_RUNNING, receipt: receipt,
	}
	if receipt.GetConfirmed() {
		t.state, t.finished = taskv1.TaskState_TASK_STATE_FINISHED, now
	}
	r.mu.Lock()
	r.pruneLocked(now, 1)
	r.m[t.id] = t
	r.order = append(r.order, t.id)
	r.mu.Unlock()
	if t.state == taskv1.TaskState_TASK_STATE_RUNNING {
		go r.follow(t, r.cfg.Bound-r.cfg.Now().Sub(now))
	}
	return t.id
}

// follow waits for the gateways, up to the task's bound, and ends it.
func (r *Registry) follow(t *task, bound time.Duration) {
	p := r.cfg.Waiter.Wait(r.ctx, t.sequence, t.regions, max(bound, 0))
	if r.ctx.Err() != nil {
		return // closing: the task is not judged
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t.receipt, t.finished = p, r.cfg.Now()
	if p.GetConfirmed() {
		t.state = taskv1.TaskState_TASK_STATE_FINISHED
		return
	}
	t.state, t.err = taskv1.TaskState_TASK_STATE_ERROR, notConfirmed(p, r.cfg.Bound)
}

func notConfirmed(p *propagationv1.Propagation, bound time.Duration) string {
	if p.GetGateways() == 0 {
		return fmt.Sprintf("no gateway serving the deployment's regions reported within %s", bound)
	}
	var lag []string
	for _, g := range p.GetLagging() {
		lag = append(lag, fmt.Sprintf("%s (%s) at %d", g.GetId(), g.GetRegion(), g.GetAppliedSequence()))
	}
	return fmt.Sprintf("applied at %d of %d gateways within %s; lagging: %s",
		p.GetGatewaysApplied(), p.GetGateways(), bound, strings.Join(lag, ", "))
}

// pruneLocked drops expired tasks, and the oldest beyond Max less room.
func (r *Registry) pruneLocked(now time.Time, room int) {
	drop := 0
	for drop < len(r.order) {
		t := r.m[r.order[drop]]
		if len(r.order)-drop+room <= r.cfg.Max && t != nil && now.Before(t.expires) {
			break
		}
		delete(r.m, r.order[drop])
		drop++
	}
	r.order = r.order[drop:]
}

// Get returns a copy of the task, or false when there is none (never made
// here, or expired).
func (r *Registry) Get(id string) (*taskv1.Task, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked(r.cfg.Now(), 0)
	t, ok := r.m[id]
	if !ok {
		return nil, false
	}
	out := &taskv1.Task{
		Id: t.id, TaskType: t.typ, State: t.state, Project: t.project,
		CreatedOn: timestamppb.New(t.created), Error: t.err,
		Propagation: proto.Clone(t.receipt).(*propagationv1.Propagation),
	}
	if !t.finished.IsZero() {
		out.FinishedOn = timestamppb.New(t.finished)
	}
	return out, true
}

var _ taskv1connect.TaskServiceHandler = (*Server)(nil)

// Server serves infergate.task.v1.TaskService from a registry.
type Server struct {
	r *Registry
}

// NewServer returns the TaskService of r.
func NewServer(r *Registry) *Server { return &Server{r: r} }

// GetTask returns one task of a project the caller's token may use. A task
// of another project is NOT_FOUND, like one that does not exist: its id
// says nothing about that project.
func (s *Server) GetTask(ctx context.Context, req *connect.Request[taskv1.GetTaskRequest]) (*connect.Response[taskv1.GetTaskResponse], error) {
	id := req.Msg.GetId()
	if _, err := uuid.Parse(id); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("id: %q is not a task id", truncate(id, 64)))
	}
	t, ok := s.r.Get(id)
	p, authed := adminauth.FromContext(ctx)
	if !ok || !authed || !p.Allows(t.GetProject()) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("task %s not found (tasks are kept for %s after their bound, by the process that made them)", id, s.r.cfg.TTL))
	}
	return connect.NewResponse(&taskv1.GetTaskResponse{Task: t}), nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
