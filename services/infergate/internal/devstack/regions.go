package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/httpserver"
	"github.com/infergate/infergate/services/internal/linkproxy"
	"github.com/infergate/infergate/services/internal/natsauth"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/snapshots"
	"github.com/infergate/infergate/services/internal/upstreampolicy"
)

// With Config.Regions the stack is the topology of docs/multi-region.md
// on one machine: the embedded server is the hub (JetStream domain
// "hub"), and each region has its own leaf NATS server (its own domain,
// mirrors of the event stream and of the snapshot bucket) linked to the
// hub through a proxy the stack controls, and one gateway reading only
// those. The regions' control address cuts and heals each region's link
// and restarts its gateway.

// Region is one region of a stack started with Config.Regions.
type Region struct {
	Name       string
	GatewayURL string
	NATSURL    string

	link  *linkproxy.Proxy
	leaf  *natsembed.Server
	conns []*nats.Conn
	ln    net.Listener
	// gwCfg makes the region's gateway, again at each restart.
	gwCfg gateway.Config
	// snaps is the region's copy of the hub's snapshot bucket.
	snaps   *snapshots.Store
	gateway atomic.Pointer[gateway.Gateway]
	// restarts asks run for a new gateway; it answers on the channel sent.
	restarts chan chan error
}

// Gateway is the region's gateway now (a restart makes a new one).
func (r *Region) Gateway() *gateway.Gateway { return r.gateway.Load() }

// Restart stops the region's gateway and starts a new one on the same
// address, as a restarted process would: it builds its map from the
// region's latest snapshot and mirror, without the hub.
func (r *Region) Restart(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case r.restarts <- done:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run serves the region's gateway on its address until ctx ends, with a
// new gateway at each Restart.
func (r *Region) run(ctx context.Context, fastPath bool) error {
	for {
		g := r.Gateway()
		gctx, stop := context.WithCancel(ctx)
		errc := make(chan error, 2)
		go func() { errc <- g.Run(gctx) }()
		go func() {
			front := gateway.NewFront(httpserver.New(r.ln.Addr().String(), g.Handler()), fastPath, g.Bounds())
			front.Use(g)
			errc <- front.Serve(gctx, r.ln, time.Second)
		}()
		var done chan error
		select {
		case <-ctx.Done():
		case done = <-r.restarts:
		case err := <-errc:
			stop()
			<-errc
			if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		}
		stop()
		<-errc
		<-errc
		if done == nil {
			return nil
		}
		// The same address: the listener was closed with the front.
		_ = r.ln.Close()
		err := r.newGateway(r.ln.Addr().String())
		done <- err
		if err != nil {
			return err
		}
	}
}

// newGateway makes a new gateway for the region, listening on addr.
func (r *Region) newGateway(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("region %s gateway: %w", r.Name, err)
	}
	g, err := gateway.New(r.gwCfg)
	if err != nil {
		ln.Close()
		return err
	}
	r.ln = ln
	r.gateway.Store(g)
	return nil
}

// Cut cuts the region's leaf-node link to the hub; Heal restores it.
func (r *Region) Cut()        { r.link.Cut() }
func (r *Region) Heal() error { return r.link.Heal() }

// Snapshot is the latest snapshot in the region's copy of the bucket;
// snapshots.ErrNone when there is none yet.
func (r *Region) Snapshot(ctx context.Context) (snapshots.Info, error) { return r.snaps.Latest(ctx) }

// Linked reports whether the region's leaf server is linked to the hub.
func (r *Region) Linked() bool { return r.leaf.LeafNodes() > 0 }

func (r *Region) close() {
	for _, nc := range r.conns {
		nc.Close()
	}
	if r.ln != nil {
		r.ln.Close()
	}
	if r.leaf != nil {
		r.leaf.Shutdown()
	}
	if r.link != nil {
		r.link.Close()
	}
}

// regionGatewayID is the id of region's gateway in the dev stack.
func regionGatewayID(region string) string { return GatewayID + "-" + region }

// hubUsers are the leaf users the hub must know, one per region.
func hubUsers(keysDir string, regions []string) ([]*server.NkeyUser, error) {
	ids := make([]natsauth.Identity, len(regions))
	for i, r := range regions {
		ids[i] = natsauth.Identity{Role: natsauth.Leaf, Region: r}
	}
	return natsauth.Users(keysDir, ids...)
}

// startRegion starts region's leaf server linked to the hub through a
// proxy, creates its mirrors of the event stream and of the snapshot
// bucket as the region's admin (the stack owns them, as it owns the hub's
// stream) and its gateway, which reads only those.
func startRegion(ctx context.Context, cfg Config, keysDir, hubLeaf string, hub jetstream.JetStream, name string) (_ *Region, err error) {
	r := &Region{Name: name}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	if r.link, err = linkproxy.Listen("127.0.0.1:0", strings.TrimPrefix(hubLeaf, "nats-leaf://")); err != nil {
		return nil, err
	}
	leafID := natsauth.Identity{Role: natsauth.Leaf, Region: name}
	seed, err := os.ReadFile(leafID.SeedFile(keysDir))
	if err != nil {
		return nil, err
	}
	gwID := natsauth.GatewayIdentity(name, regionGatewayID(name))
	// The region's admin, who creates its mirrors (their feeds on the hub
	// are made through hub, as the control plane).
	adminID := natsauth.Identity{Role: natsauth.RegionAdmin, Region: name}
	users, err := natsauth.Users(keysDir, gwID, adminID)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse("nats-leaf://" + r.link.Addr())
	r.leaf, err = natsembed.Start(natsembed.Config{
		StoreDir: filepath.Join(cfg.DataDir, "nats-"+name), ServerName: "leaf-" + name, Domain: name,
		LeafRemotes: []*url.URL{u}, LeafNkeySeed: strings.TrimSpace(string(seed)),
		Users: users,
	})
	if err != nil {
		return nil, fmt.Errorf("region %s: %w", name, err)
	}
	r.NATSURL = r.leaf.ClientURL()
	for deadline := time.Now().Add(10 * time.Second); !r.Linked(); {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("region %s: the leaf server did not link to the hub", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	connect := func(id natsauth.Identity) (*nats.Conn, error) {
		opts, err := id.ClientOptions(id.SeedFile(keysDir), "")
		if err != nil {
			return nil, err
		}
		nc, err := r.leaf.Connect(append(opts, nats.Name("infergate-dev-"+name+"-"+string(id.Role)), nats.MaxReconnects(-1))...)
		if err == nil {
			r.conns = append(r.conns, nc)
		}
		return nc, err
	}
	admin, err := connect(adminID)
	if err != nil {
		return nil, err
	}
	adminJS, err := jetstream.New(admin)
	if err != nil {
		return nil, err
	}
	if _, err := eventstore.CreateMirror(ctx, adminJS, hub, eventstore.MirrorConfig{Region: name}); err != nil {
		return nil, fmt.Errorf("region %s: %w", name, err)
	}
	if _, err := snapshots.CreateMirror(ctx, adminJS, hub, snapshots.MirrorConfig{Region: name}); err != nil {
		return nil, fmt.Errorf("region %s: %w", name, err)
	}
	gwNC, err := connect(gwID)
	if err != nil {
		return nil, err
	}
	gwJS, err := jetstream.New(gwNC)
	if err != nil {
		return nil, err
	}
	gwHub, err := jetstream.NewWithDomain(gwNC, eventstore.DefaultHubDomain)
	if err != nil {
		return nil, err
	}
	mirror, err := eventstore.OpenMirror(ctx, gwJS, gwHub, eventstore.MirrorConfig{})
	if err != nil {
		return nil, fmt.Errorf("region %s: %w", name, err)
	}
	if r.snaps, err = snapshots.Open(ctx, gwJS, snapshots.Config{ReadOnly: true}); err != nil {
		return nil, fmt.Errorf("region %s: %w", name, err)
	}
	r.gwCfg = gateway.Config{
		Events: mirror, NATS: gwNC, Region: name, BaseDomain: cfg.BaseDomain, ID: regionGatewayID(name), Snapshots: r.snaps,
		Log: cfg.Log, Upstreams: upstreampolicy.MustParse(upstreampolicy.Loopback), MaxStaleness: cfg.RegionMaxStaleness,
		Usage: gateway.Usage{FlushInterval: cfg.UsageFlushInterval},
	}
	if err := r.newGateway("127.0.0.1:0"); err != nil {
		return nil, err
	}
	r.GatewayURL = "http://" + cfg.BaseDomain + ":" + port(r.ln.Addr())
	r.restarts = make(chan chan error)
	return r, nil
}

// regionsControl serves the regions' link switches:
// POST /regions/<name>/cut, POST /regions/<name>/heal,
// POST /regions/<name>/restart (the region's gateway), GET /regions.
func regionsControl(regions []*Region, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	find := func(w http.ResponseWriter, req *http.Request) *Region {
		i := slices.IndexFunc(regions, func(r *Region) bool { return r.Name == req.PathValue("name") })
		if i < 0 {
			http.Error(w, "no such region", http.StatusNotFound)
			return nil
		}
		return regions[i]
	}
	mux.HandleFunc("POST /regions/{name}/cut", func(w http.ResponseWriter, req *http.Request) {
		if r := find(w, req); r != nil {
			r.Cut()
			log.Warn("region cut off from the hub", "region", r.Name)
			fmt.Fprintf(w, "region %s cut off from the hub\n", r.Name)
		}
	})
	mux.HandleFunc("POST /regions/{name}/heal", func(w http.ResponseWriter, req *http.Request) {
		if r := find(w, req); r != nil {
			if err := r.Heal(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			log.Warn("region linked to the hub again", "region", r.Name)
			fmt.Fprintf(w, "region %s linked to the hub again\n", r.Name)
		}
	})
	mux.HandleFunc("POST /regions/{name}/restart", func(w http.ResponseWriter, req *http.Request) {
		if r := find(w, req); r != nil {
			ctx, cancel := context.WithTimeout(req.Context(), 30*time.Second)
			defer cancel()
			if err := r.Restart(ctx); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			log.Warn("region's gateway restarted", "region", r.Name)
			fmt.Fprintf(w, "region %s's gateway restarted: it starts from the region's snapshot and mirror (GET /regions: ready, snapshot_sequence)\n", r.Name)
		}
	})
	mux.HandleFunc("GET /regions", func(w http.ResponseWriter, req *http.Request) {
		type view struct {
			Region  string `json:"region"`
			Linked  bool   `json:"linked"`
			Gateway string `json:"gateway"`
			// Snapshot is the sequence of the latest snapshot in the
			// region's copy of the bucket (0: none yet).
			Snapshot uint64         `json:"snapshot_sequence"`
			Status   gateway.Status `json:"status"`
		}
		var out []view
		for _, r := range regions {
			snap, _ := r.Snapshot(req.Context())
			out = append(out, view{r.Name, r.Linked(), r.GatewayURL, snap.Sequence, r.Gateway().Status()})
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	})
	return mux
}

// validRegions reports a bad --regions list.
func validRegions(regions []string, local string) error {
	var errs []error
	for _, r := range regions {
		if r == "" || r == eventstore.DefaultHubDomain || r == local || strings.ContainsAny(r, ".*> \t") {
			errs = append(errs, fmt.Errorf("region %q: want a NATS subject token other than %q and the hub's own region %q", r, eventstore.DefaultHubDomain, local))
		}
	}
	return errors.Join(errs...)
}
