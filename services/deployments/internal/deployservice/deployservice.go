// Package deployservice serves infergate.deployment.v1.DeploymentService:
// commands are decided against the deployment aggregate's own events (and
// the linked keys' own events) and appended to the stream; queries are
// answered from the read model.
package deployservice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	propagationv1 "github.com/infergate/infergate/gen/infergate/propagation/v1"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/command"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/paging"
	"github.com/infergate/infergate/services/internal/propagation"
	"github.com/infergate/infergate/services/internal/readmodel"
	"github.com/infergate/infergate/services/internal/rpcerr"
	"github.com/infergate/infergate/services/internal/tasks"
	"github.com/infergate/infergate/services/internal/upstreampolicy"
)

var _ deploymentv1connect.DeploymentServiceHandler = (*Server)(nil)

// Config is what the service needs.
type Config struct {
	// Events is the event store. Required.
	Events *eventstore.Store
	// Reads is the read model the Projector fills. Required.
	Reads readmodel.Store
	// Projector keeps Reads up to date (a *readmodel.Projector); writes
	// wait for it, briefly, so a read after a write sees the write.
	// Required.
	Projector command.ReadProgress
	// GatewayURL is the public URL of the edge gateways, from which each
	// deployment's endpoint_url is made: http://localhost:8000 gives
	// http://model-<name>.<project>.localhost:8000. Required.
	GatewayURL string
	// Propagation reports how far a change has reached the gateways;
	// default propagation.Unconfirmed.
	Propagation propagation.Waiter
	// PropagationTimeout bounds that wait by default; default 2 s.
	PropagationTimeout time.Duration
	// ReadYourWritesTimeout bounds the wait for the read model after a
	// write; default command.DefaultReadYourWritesTimeout. A read model
	// still behind then does not fail the write: the answer says so.
	ReadYourWritesTimeout time.Duration
	// Log receives errors and events. Default slog.Default().
	Log *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Upstreams is the policy upstream URLs must pass (SSRF); nil is the
	// default policy: loopback, link-local and unspecified addresses
	// refused.
	Upstreams *upstreampolicy.Policy
	// Resolver resolves upstream host names for that check; default
	// net.DefaultResolver.
	Resolver upstreampolicy.Resolver
	// Tasks records the task each create, update and delete answers with;
	// default a registry of the service's own on Propagation.
	Tasks *tasks.Registry
}

func (c *Config) setDefaults() {
	if c.Propagation == nil {
		c.Propagation = propagation.Unconfirmed{}
	}
	if c.PropagationTimeout == 0 {
		c.PropagationTimeout = propagation.DefaultTimeout
	}
	if c.ReadYourWritesTimeout == 0 {
		c.ReadYourWritesTimeout = command.DefaultReadYourWritesTimeout
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Tasks == nil {
		c.Tasks = tasks.New(tasks.Config{Waiter: c.Propagation})
	}
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Events == nil {
		errs = append(errs, errors.New("deployservice: Events is required"))
	}
	if c.Reads == nil {
		errs = append(errs, errors.New("deployservice: Reads is required"))
	}
	if c.Projector == nil {
		errs = append(errs, errors.New("deployservice: Projector is required"))
	}
	if u, err := url.Parse(c.GatewayURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		errs = append(errs, fmt.Errorf("deployservice: GatewayURL %q is not an absolute http(s) URL", c.GatewayURL))
	}
	return errors.Join(errs...)
}

// Server implements deploymentv1connect.DeploymentServiceHandler.
type Server struct {
	cfg     Config
	gateway *url.URL
	folds   folds
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.GatewayURL)
	return &Server{cfg: cfg, gateway: u}, nil
}

// DeploymentAggregate addresses a deployment's subject.
func DeploymentAggregate(project, name string) eventstore.Aggregate {
	return eventstore.Aggregate{Project: project, Type: eventstore.TypeDeployment, Name: name}
}

// liveKeys loads the named keys' own events and returns the ids of those
// that are live now.
func (s *Server) liveKeys(ctx context.Context, project string, names ...[]string) (aggregate.LiveKeys, error) {
	live := aggregate.LiveKeys{}
	seen := map[string]bool{}
	for _, list := range names {
		for _, name := range list {
			if seen[name] || aggregate.ValidateKeyName("key", name) != nil {
				continue
			}
			seen[name] = true
			records, _, err := s.cfg.Events.Load(ctx, eventstore.Aggregate{Project: project, Type: eventstore.TypeKey, Name: name})
			if err != nil {
				return nil, err
			}
			if k := aggregate.KeyFrom(name, eventstore.Events(records)); k.Live {
				live[name] = k.ID
			}
		}
	}
	return live, nil
}

func (s *Server) fail(ctx context.Context, err error) error { return rpcerr.From(ctx, s.cfg.Log, err) }

// changed is what a command on a deployment did, for its answer.
type changed struct {
	// deployment is the deployment right after the change; nil when it
	// was deleted.
	deployment  *deploymentv1.Deployment
	propagation *propagationv1.Propagation
	behind      bool
	// regions the deployment is served in, for its task.
	regions []string
}

// task starts the task that follows the change to the gateways.
func (s *Server) task(typ, project string, c changed) []string {
	return []string{s.cfg.Tasks.Start(typ, project, c.regions, c.propagation)}
}

// change runs one command on a deployment and waits for the read model and
// the gateways. decide gets the folded deployment and the live keys among
// keys and, with allLinks, the deployment's current links: only a command
// that recomputes the whole link set (UpdateDeploymentAuth) needs those,
// and checking them is one load per linked key — on a deployment with
// thousands of keys, thousands of stream reads for every LinkKey.
//
// Once the append is acknowledged nothing turns the call into an error:
// the answer is the deployment as the command left it, folded from its
// records and the appended events, not a read model that may lag; the
// read-model wait only lets a read right after see the write.
func (s *Server) change(ctx context.Context, header http.Header, procedure, project, name string, keys []string, allLinks bool, timeout *durationpb.Duration,
	decide func(meta aggregate.Meta, d aggregate.Deployment, live aggregate.LiveKeys) ([]*eventv1.Event, error),
) (changed, error) {
	wait, err := command.PropagationTimeout(timeout, s.cfg.PropagationTimeout)
	if err != nil {
		return changed{}, err
	}
	meta := command.Meta(ctx, project, s.cfg.Now())
	agg := DeploymentAggregate(project, name)
	var (
		live    aggregate.LiveKeys
		checked map[string]bool // the key names live was computed for
	)
	res, err := s.cfg.Events.Decide(ctx, agg, command.MsgID(header, meta, procedure, agg), 0,
		func(records []eventstore.Record) ([]*eventv1.Event, error) {
			d := s.folds.fold(s.cfg.Events.Subject(agg), name, records)
			var links []string
			if allLinks {
				links = slices.Collect(maps.Keys(d.Links))
			}
			var err error
			if live, err = s.liveKeys(ctx, project, keys, links); err != nil {
				return nil, err
			}
			checked = setOf(keys, links)
			return decide(meta, d, live)
		})
	if err != nil {
		return changed{}, err
	}
	// Committed: from here on nothing turns the call into an error.
	d := s.folds.fold(s.cfg.Events.Subject(agg), name, res.Records).Clone()
	for _, e := range res.Events {
		d.Apply(e)
	}
	if res.Duplicate {
		// A retry, answered as the first attempt was: the read model has
		// moved on since, so check the links' keys themselves (a rare
		// path; a failure only leaves the check to the read model).
		links := slices.Collect(maps.Keys(d.Links))
		if l, err := s.liveKeys(ctx, project, links); err == nil {
			live, checked = l, setOf(links)
		}
	}
	out := changed{behind: !command.WaitRead(ctx, s.cfg.Projector, res.Sequence, s.cfg.ReadYourWritesTimeout), regions: d.Regions}
	out.propagation = s.cfg.Propagation.Wait(ctx, res.Sequence, d.Regions, wait)
	if d.Live {
		out.deployment = s.decidedProto(ctx, project, d, live, checked, out.behind)
	}
	return out, nil
}

func setOf(lists ...[]string) map[string]bool {
	set := map[string]bool{}
	for _, l := range lists {
		for _, k := range l {
			set[k] = true
		}
	}
	return set
}

// decidedProto shows a deployment as a command left it. Which of its links
// still name a live key is known for the keys the command checked; for
// the others it comes from the read model once that has applied the
// command — while it is behind, every link is listed.
func (s *Server) decidedProto(ctx context.Context, project string, d aggregate.Deployment, live aggregate.LiveKeys, checked map[string]bool, behind bool) *deploymentv1.Deployment {
	var listed map[string]bool // by the read model; nil until needed
	keys := []string{}
	for name, id := range d.Links {
		if checked[name] {
			if live[name] == id {
				keys = append(keys, name)
			}
			continue
		}
		if listed == nil && !behind {
			listed = map[string]bool{}
			if rd, err := s.cfg.Reads.GetDeployment(ctx, project, d.Name); err == nil && rd.ID == d.ID {
				for _, k := range rd.APIKeys {
					listed[k] = true
				}
			} else {
				behind = true // it cannot tell: list them all
			}
		}
		if behind || listed[name] {
			keys = append(keys, name)
		}
	}
	slices.Sort(keys)
	status, _ := readmodel.StatusOf(d.Status)
	return &deploymentv1.Deployment{
		Project:      project,
		Name:         d.Name,
		Id:           d.ID,
		Model:        d.Model,
		UpstreamUrl:  d.UpstreamURL,
		Regions:      d.Regions,
		Status:       statusToProto(status),
		StatusReason: d.StatusReason,
		EndpointUrl:  EndpointURL(s.gateway, project, d.Name),
		AuthEnabled:  d.AuthEnabled,
		ApiKeys:      keys,
		CreatedAt:    timestamppb.New(readmodel.NormalTime(d.CreatedAt)),
	}
}

// CreateDeployment creates a deployment in status DEPLOYING.
func (s *Server) CreateDeployment(ctx context.Context, req *connect.Request[deploymentv1.CreateDeploymentRequest]) (*connect.Response[deploymentv1.CreateDeploymentResponse], error) {
	m := req.Msg
	nd := aggregate.NewDeployment{
		Name:        m.GetName(),
		Model:       m.GetModel(),
		UpstreamURL: m.GetUpstreamUrl(),
		Regions:     m.GetRegions(),
		AuthEnabled: m.GetAuthEnabled(),
		Keys:        m.GetApiKeys(),
	}
	if err := aggregate.ValidateNewDeployment(m.GetProject(), nd); err != nil {
		return nil, s.fail(ctx, err)
	}
	if err := s.cfg.Upstreams.CheckURL(ctx, s.cfg.Resolver, nd.UpstreamURL); err != nil {
		return nil, s.fail(ctx, &aggregate.FieldError{Field: "upstream_url", Problem: err.Error()})
	}
	c, err := s.change(ctx, req.Header(), req.Spec().Procedure, m.GetProject(), m.GetName(), m.GetApiKeys(), false, m.GetPropagationTimeout(),
		func(meta aggregate.Meta, d aggregate.Deployment, live aggregate.LiveKeys) ([]*eventv1.Event, error) {
			return d.Create(meta, nd, live)
		})
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return connect.NewResponse(&deploymentv1.CreateDeploymentResponse{
		Deployment: c.deployment, Propagation: c.propagation, ReadModelBehind: c.behind,
		Tasks: s.task(tasks.CreateDeployment, m.GetProject(), c),
	}), nil
}

// GetDeployment returns one deployment.
func (s *Server) GetDeployment(ctx context.Context, req *connect.Request[deploymentv1.GetDeploymentRequest]) (*connect.Response[deploymentv1.GetDeploymentResponse], error) {
	m := req.Msg
	if err := errors.Join(aggregate.ValidateProject("project", m.GetProject()), aggregate.ValidateDeploymentName("name", m.GetName())); err != nil {
		return nil, s.fail(ctx, err)
	}
	d, err := s.cfg.Reads.GetDeployment(ctx, m.GetProject(), m.GetName())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return connect.NewResponse(&deploymentv1.GetDeploymentResponse{Deployment: s.toProto(d)}), nil
}

// ListDeployments returns a page of the project's deployments.
func (s *Server) ListDeployments(ctx context.Context, req *connect.Request[deploymentv1.ListDeploymentsRequest]) (*connect.Response[deploymentv1.ListDeploymentsResponse], error) {
	m := req.Msg
	if err := aggregate.ValidateProject("project", m.GetProject()); err != nil {
		return nil, s.fail(ctx, err)
	}
	page, err := paging.Parse(m.GetPageSize(), m.GetPageToken())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	list, err := s.cfg.Reads.ListDeployments(ctx, m.GetProject(), page)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	list, next := paging.Trim(list, page, func(d readmodel.Deployment) string { return d.Name })
	out := &deploymentv1.ListDeploymentsResponse{NextPageToken: next}
	for _, d := range list {
		out.Deployments = append(out.Deployments, s.toProto(d))
	}
	return connect.NewResponse(out), nil
}

// UpdateDeploymentAuth sets the toggle and the whole set of linked keys.
func (s *Server) UpdateDeploymentAuth(ctx context.Context, req *connect.Request[deploymentv1.UpdateDeploymentAuthRequest]) (*connect.Response[deploymentv1.UpdateDeploymentAuthResponse], error) {
	m := req.Msg
	if err := errors.Join(
		aggregate.ValidateProject("project", m.GetProject()),
		aggregate.ValidateDeploymentName("name", m.GetName()),
		aggregate.ValidateNames("api_keys", m.GetApiKeys(), aggregate.ValidateKeyName),
	); err != nil {
		return nil, s.fail(ctx, err)
	}
	c, err := s.change(ctx, req.Header(), req.Spec().Procedure, m.GetProject(), m.GetName(), m.GetApiKeys(), true, m.GetPropagationTimeout(),
		func(meta aggregate.Meta, d aggregate.Deployment, live aggregate.LiveKeys) ([]*eventv1.Event, error) {
			return d.UpdateAuth(meta, m.GetAuthEnabled(), m.GetApiKeys(), live)
		})
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return connect.NewResponse(&deploymentv1.UpdateDeploymentAuthResponse{Deployment: c.deployment, Propagation: c.propagation, ReadModelBehind: c.behind}), nil
}

// UpdateDeployment is the platform's PATCH: api_keys is the whole linked
// set ([] unlinks all and disables auth), auth_enabled alone toggles auth
// and keeps the links, both together are invalid.
func (s *Server) UpdateDeployment(ctx context.Context, req *connect.Request[deploymentv1.UpdateDeploymentRequest]) (*connect.Response[deploymentv1.UpdateDeploymentResponse], error) {
	m := req.Msg
	keys, err := keyNames(m.GetApiKeys())
	errs := []error{
		aggregate.ValidateProject("project", m.GetProject()),
		aggregate.ValidateDeploymentName("name", m.GetName()),
		err,
		aggregate.ValidateNames("api_keys", keys, aggregate.ValidateKeyName),
	}
	if m.ApiKeys != nil && m.AuthEnabled != nil {
		errs = append(errs, &aggregate.FieldError{Field: "api_keys", Problem: "cannot be set together with auth_enabled: api_keys sets the linked keys and the toggle (an empty list disables authentication)"})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, s.fail(ctx, err)
	}
	c, err := s.change(ctx, req.Header(), req.Spec().Procedure, m.GetProject(), m.GetName(), keys, m.ApiKeys != nil, m.GetPropagationTimeout(),
		func(meta aggregate.Meta, d aggregate.Deployment, live aggregate.LiveKeys) ([]*eventv1.Event, error) {
			switch {
			case m.ApiKeys != nil:
				return d.UpdateAuth(meta, len(keys) > 0, keys, live)
			case m.AuthEnabled != nil:
				return d.SetAuth(meta, m.GetAuthEnabled())
			}
			return d.SetAuth(meta, d.AuthEnabled) // nothing to change; NOT_FOUND if it is gone
		})
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return connect.NewResponse(&deploymentv1.UpdateDeploymentResponse{
		Deployment: c.deployment, Propagation: c.propagation, ReadModelBehind: c.behind,
		Tasks: s.task(tasks.UpdateDeployment, m.GetProject(), c),
	}), nil
}

// keyNames reads api_keys, a JSON array that must hold only strings.
func keyNames(list *structpb.ListValue) ([]string, error) {
	var names []string
	for i, v := range list.GetValues() {
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, &aggregate.FieldError{Field: fmt.Sprintf("api_keys[%d]", i), Problem: "must be a key name (a string)"}
		}
		names = append(names, s.StringValue)
	}
	return names, nil
}

// LinkKey links one key.
func (s *Server) LinkKey(ctx context.Context, req *connect.Request[deploymentv1.LinkKeyRequest]) (*connect.Response[deploymentv1.LinkKeyResponse], error) {
	m := req.Msg
	if err := s.validateLink(m.GetProject(), m.GetDeployment(), m.GetKey()); err != nil {
		return nil, s.fail(ctx, err)
	}
	c, err := s.change(ctx, req.Header(), req.Spec().Procedure, m.GetProject(), m.GetDeployment(), []string{m.GetKey()}, false, m.GetPropagationTimeout(),
		func(meta aggregate.Meta, d aggregate.Deployment, live aggregate.LiveKeys) ([]*eventv1.Event, error) {
			return d.Link(meta, m.GetKey(), live)
		})
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return connect.NewResponse(&deploymentv1.LinkKeyResponse{Deployment: c.deployment, Propagation: c.propagation, ReadModelBehind: c.behind}), nil
}

// UnlinkKey unlinks one key.
func (s *Server) UnlinkKey(ctx context.Context, req *connect.Request[deploymentv1.UnlinkKeyRequest]) (*connect.Response[deploymentv1.UnlinkKeyResponse], error) {
	m := req.Msg
	if err := s.validateLink(m.GetProject(), m.GetDeployment(), m.GetKey()); err != nil {
		return nil, s.fail(ctx, err)
	}
	c, err := s.change(ctx, req.Header(), req.Spec().Procedure, m.GetProject(), m.GetDeployment(), []string{m.GetKey()}, false, m.GetPropagationTimeout(),
		func(meta aggregate.Meta, d aggregate.Deployment, live aggregate.LiveKeys) ([]*eventv1.Event, error) {
			return d.Unlink(meta, m.GetKey(), live)
		})
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return connect.NewResponse(&deploymentv1.UnlinkKeyResponse{Deployment: c.deployment, Propagation: c.propagation, ReadModelBehind: c.behind}), nil
}

// DeleteDeployment deletes a deployment.
func (s *Server) DeleteDeployment(ctx context.Context, req *connect.Request[deploymentv1.DeleteDeploymentRequest]) (*connect.Response[deploymentv1.DeleteDeploymentResponse], error) {
	m := req.Msg
	if err := errors.Join(aggregate.ValidateProject("project", m.GetProject()), aggregate.ValidateDeploymentName("name", m.GetName())); err != nil {
		return nil, s.fail(ctx, err)
	}
	c, err := s.change(ctx, req.Header(), req.Spec().Procedure, m.GetProject(), m.GetName(), nil, false, m.GetPropagationTimeout(),
		func(meta aggregate.Meta, d aggregate.Deployment, _ aggregate.LiveKeys) ([]*eventv1.Event, error) {
			return d.Delete(meta)
		})
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return connect.NewResponse(&deploymentv1.DeleteDeploymentResponse{
		Propagation: c.propagation, ReadModelBehind: c.behind,
		Tasks: s.task(tasks.DeleteDeployment, m.GetProject(), c),
	}), nil
}

func (s *Server) validateLink(project, deployment, key string) error {
	return errors.Join(
		aggregate.ValidateProject("project", project),
		aggregate.ValidateDeploymentName("deployment", deployment),
		aggregate.ValidateKeyName("key", key),
	)
}

// EndpointURL is where clients reach a deployment through the gateways.
func EndpointURL(gateway *url.URL, project, name string) string {
	u := *gateway
	host := "model-" + name + "." + project + "." + gateway.Hostname()
	if p := gateway.Port(); p != "" {
		host += ":" + p
	}
	u.Host = host
	u.Path = ""
	return u.String()
}

func (s *Server) toProto(d readmodel.Deployment) *deploymentv1.Deployment {
	return &deploymentv1.Deployment{
		Project:      d.Project,
		Name:         d.Name,
		Id:           d.ID,
		Model:        d.Model,
		UpstreamUrl:  d.UpstreamURL,
		Regions:      d.Regions,
		Status:       statusToProto(d.Status),
		StatusReason: d.StatusReason,
		EndpointUrl:  EndpointURL(s.gateway, d.Project, d.Name),
		AuthEnabled:  d.AuthEnabled,
		ApiKeys:      d.APIKeys,
		CreatedAt:    timestamppb.New(d.CreatedAt),
	}
}

func statusToProto(s string) deploymentv1.DeploymentStatus {
	switch s {
	case readmodel.StatusDeploying:
		return deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYING
	case readmodel.StatusDeployed:
		return deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED
	case readmodel.StatusFailed:
		return deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_FAILED
	}
	return deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_UNSPECIFIED
}
