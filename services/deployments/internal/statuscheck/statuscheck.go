// Package statuscheck moves new deployments out of DEPLOYING: it follows
// the stream, probes each deploying deployment's upstream (GET
// <upstream>/v1/models, falling back to GET <upstream>/health) and appends
// DeploymentStatusChanged to DEPLOYED once it answers, or to FAILED with a
// reason once the deadline has passed.
//
// Several deployment services may run checkers at once: each status
// change is decided against the deployment's own events with a message id
// derived from the deployment id and status, so the stream gets it once.
package statuscheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/command"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/follow"
	"github.com/infergate/infergate/services/internal/upstreampolicy"
)

// Config tunes the checker.
type Config struct {
	// Events is the event store. Required.
	Events *eventstore.Store
	// Client makes the probes; default a client with a 5 s timeout whose
	// connections are checked against Upstreams.
	Client *http.Client
	// Upstreams is the upstream policy the default client's connections
	// must pass — the address actually dialled, also after a redirect —
	// so the probe cannot be turned on the control plane's own loopback
	// or the metadata endpoint; nil: the default policy.
	Upstreams *upstreampolicy.Policy
	// Interval between probes of one deployment; default 1 s.
	Interval time.Duration
	// Timeout after creation at which a silent upstream makes the
	// deployment FAILED; default 2 minutes.
	Timeout time.Duration
	// Log receives what the checker does. Default slog.Default().
	Log *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Client == nil {
		c.Client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext:         c.Upstreams.DialContext(&net.Dialer{Timeout: 5 * time.Second}),
			TLSHandshakeTimeout: 5 * time.Second,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     30 * time.Second,
		}}
	}
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Minute
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Events == nil {
		errs = append(errs, errors.New("statuscheck: Events is required"))
	}
	if c.Interval < 0 || c.Timeout < 0 {
		errs = append(errs, errors.New("statuscheck: Interval and Timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// Checker probes deploying deployments.
type Checker struct {
	cfg Config

	mu sync.Mutex // mu protects the fields below
	// pending are the deploying deployments by id.
	pending map[string]pending
	started bool
	// stream and applied are the checker's checkpoint.
	stream  eventstore.Identity
	applied uint64
	// runCtx and probes are Run's, for the probe loops it starts.
	runCtx context.Context
	probes *sync.WaitGroup
}

type pending struct {
	agg       eventstore.Aggregate
	upstream  string
	createdAt time.Time
	cancel    context.CancelFunc
}

// New returns a Checker.
func New(cfg Config) (*Checker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Checker{cfg: cfg, pending: map[string]pending{}}, nil
}

// Run follows the stream until ctx ends, on the one follower primitive
// (package follow): stream failures are retried with backoff and never end
// Run; a stream deleted and created again, or gone, drops every pending
// probe and starts over from the new stream. Probes start once the
// checker has caught up with the stream as it was when it started (or
// when its new life began), so a restart does not probe deployments that
// were settled long ago.
func (c *Checker) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.mu.Lock()
	c.runCtx, c.probes = ctx, &wg
	c.mu.Unlock()
	f := follow.New(follow.Config{
		Name:     "status checker",
		Source:   c.cfg.Events,
		Consumer: (*checkConsumer)(c),
		Log:      c.cfg.Log,
		OnReady:  func() { c.startAll(ctx, &wg) },
	})
	_ = f.Run(ctx)
	return nil
}

// checkConsumer is the Checker as its follower's follow.Consumer.
type checkConsumer Checker

func (cc *checkConsumer) Checkpoint(context.Context) (follow.Checkpoint, error) {
	c := (*Checker)(cc)
	c.mu.Lock()
	defer c.mu.Unlock()
	return follow.Checkpoint{Stream: c.stream, Sequence: c.applied}, nil
}

func (cc *checkConsumer) Reset(_ context.Context, to eventstore.Identity) error {
	c := (*Checker)(cc)
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.pending {
		c.forget(id)
	}
	c.started, c.stream, c.applied = false, to, 0
	return nil
}

func (cc *checkConsumer) Apply(_ context.Context, rec eventstore.Record) error {
	c := (*Checker)(cc)
	c.mu.Lock()
	ctx, wg := c.runCtx, c.probes
	c.mu.Unlock()
	for _, e := range rec.Events {
		c.apply(ctx, wg, rec.Aggregate, e)
	}
	c.mu.Lock()
	c.applied = rec.Sequence
	c.mu.Unlock()
	return nil
}

func (c *Checker) apply(ctx context.Context, wg *sync.WaitGroup, agg eventstore.Aggregate, e *eventv1.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch p := e.GetPayload().(type) {
	case *eventv1.Event_DeploymentCreated:
		pd := pending{agg: agg, upstream: p.DeploymentCreated.GetUpstreamUrl(), createdAt: e.GetTime().AsTime()}
		id := p.DeploymentCreated.GetDeploymentId()
		c.pending[id] = pd
		if c.started {
			c.start(ctx, wg, id)
		}
	case *eventv1.Event_DeploymentStatusChanged:
		if p.DeploymentStatusChanged.GetStatus() != eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYING {
			c.forget(p.DeploymentStatusChanged.GetDeploymentId())
		}
	case *eventv1.Event_DeploymentDeleted:
		c.forget(p.DeploymentDeleted.GetDeploymentId())
	}
}

// forget stops probing a deployment. Callers hold c.mu.
func (c *Checker) forget(id string) {
	if pd, ok := c.pending[id]; ok {
		if pd.cancel != nil {
			pd.cancel()
		}
		delete(c.pending, id)
	}
}

func (c *Checker) startAll(ctx context.Context, wg *sync.WaitGroup) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return
	}
	c.started = true
	for id := range c.pending {
		c.start(ctx, wg, id)
	}
}

// start launches the probe loop of one deployment. Callers hold c.mu.
func (c *Checker) start(ctx context.Context, wg *sync.WaitGroup, id string) {
	pd := c.pending[id]
	if pd.cancel != nil {
		return
	}
	pctx, cancel := context.WithCancel(ctx)
	pd.cancel = cancel
	c.pending[id] = pd
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.probeLoop(pctx, id, pd)
	}()
}

func (c *Checker) probeLoop(ctx context.Context, id string, pd pending) {
	deadline := pd.createdAt.Add(c.cfg.Timeout)
	for {
		err := c.probe(ctx, pd.upstream)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			c.settle(ctx, id, pd.agg, eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED, "")
			return
		case !c.cfg.Now().Before(deadline):
			c.settle(ctx, id, pd.agg, eventv1.DeploymentStatus_DEPLOYMENT_STATUS_FAILED,
				fmt.Sprintf("upstream did not answer within %s: %v", c.cfg.Timeout, err))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.cfg.Interval):
		}
	}
}

// probe asks the upstream for its models, then for its health.
func (c *Checker) probe(ctx context.Context, upstream string) error {
	base := strings.TrimSuffix(upstream, "/")
	var errs []error
	for _, path := range []string{"/v1/models", "/health"} {
		err := c.get(ctx, base+path)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Checker) get(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return nil
}

func (c *Checker) settle(ctx context.Context, id string, agg eventstore.Aggregate, status eventv1.DeploymentStatus, reason string) {
	meta := command.Meta(ctx, agg.Project, c.cfg.Now())
	msgID := "status-" + id + "-" + status.String()
	_, err := c.cfg.Events.Decide(ctx, agg, msgID, 0, func(records []eventstore.Record) ([]*eventv1.Event, error) {
		d := aggregate.DeploymentFrom(agg.Name, eventstore.Events(records))
		if !d.Live || d.ID != id || d.Status != eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYING {
			return nil, nil
		}
		return d.SetStatus(meta, status, reason)
	})
	if err != nil && ctx.Err() == nil {
		c.cfg.Log.WarnContext(ctx, "status change not recorded", "deployment", agg.String(), "status", status.String(), "err", err)
		return
	}
	c.cfg.Log.InfoContext(ctx, "deployment status", "deployment", agg.String(), "status", status.String(), "reason", reason)
}
