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
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/linkproxy"
	"github.com/infergate/infergate/services/internal/natsauth"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/upstreampolicy"
)

// With Config.Regions the stack is the topology of docs/multi-region.md
// on one machine: the embedded server is the hub (JetStream domain
// "hub"), and each region has its own leaf NATS server (its own domain,
// a mirror of the event stream) linked to the hub through a proxy the
// stack controls, and one gateway reading only that mirror. The regions'
// control address cuts and heals each region's link.

// Region is one region of a stack started with Config.Regions.
type Region struct {
	Name       string
	GatewayURL string
	NATSURL    string
	Gateway    *gateway.Gateway

	link    *linkproxy.Proxy
	leaf    *natsembed.Server
	conns   []*nats.Conn
	ln      net.Listener
	gateway *gateway.Gateway
}

// Cut cuts the region's leaf-node link to the hub; Heal restores it.
func (r *Region) Cut()        { r.link.Cut() }
func (r *Region) Heal() error { return r.link.Heal() }

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
// proxy, creates its mirror (the stack owns it, as it owns the hub's
// stream) and its gateway, which reads only the mirror.
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
	gwPub, err := gwID.Ensure(keysDir)
	if err != nil {
		return nil, err
	}
	// The region's owner, who creates its mirror: the stack, as the
	// control plane's key with every permission on the leaf server only.
	plane := natsauth.Identity{Role: natsauth.ControlPlane}
	planePub, err := plane.Ensure(keysDir)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse("nats-leaf://" + r.link.Addr())
	r.leaf, err = natsembed.Start(natsembed.Config{
		StoreDir: filepath.Join(cfg.DataDir, "nats-"+name), ServerName: "leaf-" + name, Domain: name,
		LeafRemotes: []*url.URL{u}, LeafNkeySeed: strings.TrimSpace(string(seed)),
		Users: []*server.NkeyUser{gwID.User(gwPub), {Nkey: planePub}},
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
	admin, err := connect(plane)
	if err != nil {
		return nil, err
	}
	adminJS, err := jetstream.New(admin)
	if err != nil {
		return nil, err
	}
	if _, err := eventstore.CreateMirror(ctx, adminJS, hub, eventstore.MirrorConfig{}); err != nil {
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
	if r.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("region %s gateway: %w", name, err)
	}
	r.GatewayURL = "http://" + cfg.BaseDomain + ":" + port(r.ln.Addr())
	r.gateway, err = gateway.New(gateway.Config{
		Events: mirror, NATS: gwNC, Region: name, BaseDomain: cfg.BaseDomain, ID: regionGatewayID(name),
		Log: cfg.Log, Upstreams: upstreampolicy.MustParse(upstreampolicy.Loopback), MaxStaleness: cfg.RegionMaxStaleness,
		Usage: gateway.Usage{FlushInterval: cfg.UsageFlushInterval},
	})
	if err != nil {
		return nil, err
	}
	r.Gateway = r.gateway
	return r, nil
}

// regionsControl serves the regions' link switches:
// POST /regions/<name>/cut, POST /regions/<name>/heal, GET /regions.
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
	mux.HandleFunc("GET /regions", func(w http.ResponseWriter, _ *http.Request) {
		type view struct {
			Region  string         `json:"region"`
			Linked  bool           `json:"linked"`
			Gateway string         `json:"gateway"`
			Status  gateway.Status `json:"status"`
		}
		var out []view
		for _, r := range regions {
			out = append(out, view{r.Name, r.Linked(), r.GatewayURL, r.gateway.Status()})
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
