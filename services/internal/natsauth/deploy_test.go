package natsauth_test

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natsauth"
	"github.com/infergate/infergate/services/internal/receipts"
	"github.com/infergate/infergate/services/internal/snapshots"
)

// deployDir is the repository's deploy/nats, which these tests run.
const deployDir = "../../../deploy/nats"

// The identities the deploy configs define, by the environment variable
// that holds each one's public key.
var deployUsers = map[string]natsauth.Identity{
	"INFERGATE_NKEY_CONTROL_PLANE":   controlPlane,
	"INFERGATE_NKEY_AUDIT":           auditor,
	"INFERGATE_NKEY_GW_1":            gateway1,
	"INFERGATE_NKEY_GW_2":            gateway2,
	"INFERGATE_NKEY_LEAF_US":         {Role: natsauth.Leaf, Region: "us"},
	"INFERGATE_NKEY_GW_US_1":         natsauth.GatewayIdentity("us", "gw-us-1"),
	"INFERGATE_NKEY_REGION_ADMIN_US": {Role: natsauth.RegionAdmin, Region: "us"},
}

// TestDeployConfigs runs deploy/nats as it is: a 3-node hub cluster from
// nats-server.conf with TLS on client, route and leaf connections (a CA
// made here), a region's leaf server from leaf.conf connected to it, and
// the role suite against the hub over TLS. Every user's permissions in the
// files must be natsauth's.
func TestDeployConfigs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a JetStream cluster")
	}
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	caFile := writeCA(t, tlsDir)
	seeds := filepath.Join(dir, "seeds")
	for env, id := range deployUsers {
		pub, err := id.Ensure(seeds)
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv(env, pub)
	}
	leafSeed, err := os.ReadFile(deployUsers["INFERGATE_NKEY_LEAF_US"].SeedFile(seeds))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("INFERGATE_LEAF_SEED", strings.TrimSpace(string(leafSeed)))

	// Three hub nodes, each from nats-server.conf with its own name, ports
	// and store, routed to the others.
	hubConf := readFile(t, filepath.Join(deployDir, "nats-server.conf"))
	type ports struct{ client, route, leaf int }
	nodes := make([]ports, 3)
	for i := range nodes {
		nodes[i] = ports{freePort(t), freePort(t), freePort(t)}
	}
	var (
		hub     []*server.Server
		hubOpts *server.Options
	)
	for i, n := range nodes {
		subs := [][2]string{
			{"server_name: nats-1", fmt.Sprintf("server_name: nats-%d", i+1)},
			{"/etc/nats/tls/", tlsDir + "/"},
			{"/var/lib/nats", filepath.Join(dir, fmt.Sprintf("hub-%d", i+1))},
			{"0.0.0.0:4222", fmt.Sprintf("127.0.0.1:%d", n.client)},
			{"0.0.0.0:6222", fmt.Sprintf("127.0.0.1:%d", n.route)},
			{"0.0.0.0:7422", fmt.Sprintf("127.0.0.1:%d", n.leaf)},
		}
		for j, m := range nodes {
			subs = append(subs, [2]string{fmt.Sprintf("nats-route://nats-%d:6222", j+1), fmt.Sprintf("nats-route://127.0.0.1:%d", m.route)})
		}
		s, opts := runConfig(t, filepath.Join(dir, fmt.Sprintf("hub-%d.conf", i+1)), hubConf, subs)
		hub = append(hub, s)
		hubOpts = cmp.Or(hubOpts, opts)
	}
	for i, s := range hub {
		waitFor(t, fmt.Sprintf("hub node %d routed to the others over TLS", i+1), func() bool { return s.NumRoutes() >= 2 })
	}

	// The region's leaf server, connected to the hub.
	leafSubs := [][2]string{
		{"/etc/nats/tls/", tlsDir + "/"},
		{"/var/lib/nats", filepath.Join(dir, "leaf")},
		{"0.0.0.0:4222", "127.0.0.1:-1"},
	}
	for j, m := range nodes {
		leafSubs = append(leafSubs, [2]string{fmt.Sprintf("nats-leaf://nats-%d:7422", j+1), fmt.Sprintf("nats-leaf://127.0.0.1:%d", m.leaf)})
	}
	leaf, leafOpts := runConfig(t, filepath.Join(dir, "leaf.conf"), readFile(t, filepath.Join(deployDir, "leaf.conf")), leafSubs)
	waitFor(t, "the leaf server connected to the hub over TLS", func() bool { return leaf.NumLeafNodes() == 1 })

	// The files' users are natsauth's identities, permission for
	// permission.
	checkUsers(t, "nats-server.conf", hubOpts, seeds)
	checkUsers(t, "leaf.conf", leafOpts, seeds)

	hubURL := fmt.Sprintf("tls://127.0.0.1:%d", nodes[0].client)
	if nc, err := nats.Connect(hubURL, nats.RootCAs(caFile)); err == nil {
		nc.Close()
		t.Error("connected to the hub without credentials")
	}
	id := gateway1
	opts, err := id.ClientOptions(id.SeedFile(seeds), "")
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(hubURL, opts...); err == nil {
		nc.Close()
		t.Error("connected to the hub without trusting its CA")
	}

	// JetStream needs its meta leader, and every node current, before the
	// suite can start.
	waitFor(t, "the hub's JetStream cluster settled", func() bool {
		leader := false
		for _, s := range hub {
			leader = leader || s.JetStreamIsLeader()
			if !s.JetStreamIsCurrent() {
				return false
			}
		}
		return leader
	})
	cp := connectTo(hubURL, seeds, nats.RootCAs(caFile))(t, controlPlane)
	var events *eventstore.Store
	waitFor(t, "the hub's JetStream up", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		if err := eventstore.EnsureStream(ctx, cp.js, eventstore.Config{}); err != nil {
			return false
		}
		events, err = eventstore.Open(ctx, cp.js, eventstore.Config{})
		return err == nil
	})
	checkRoles(t, connectTo(hubURL, seeds, nats.RootCAs(caFile)))

	// A gateway of the region, on its leaf server, reports to the hub's
	// control plane through the leaf connection — on its own subject only.
	tracker, err := receipts.NewTracker(cp.nc, events.Identity)
	if err != nil {
		t.Fatal(err)
	}
	defer tracker.Close()
	usGW := deployUsers["INFERGATE_NKEY_GW_US_1"]
	gw := connectTo(leaf.ClientURL(), seeds, nats.RootCAs(caFile))(t, usGW)
	identity, err := events.Identity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	rep, err := receipts.NewReporter(gw.nc, usGW.ID, usGW.Region, 50*time.Millisecond, func() receipts.State {
		return receipts.State{Stream: identity, Sequence: 1, Ready: true}
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = rep.Run(ctx) }()
	waitFor(t, "the hub hears the region's gateway", func() bool {
		return slices.ContainsFunc(tracker.Gateways(), func(g receipts.Gateway) bool { return g.ID == usGW.ID && g.Region == "us" })
	})
	gw.deniedPublish(t, "infergate.gateways.us.gw-us-2")
	// Its usage counts reach the hub's usage stream through the leaf
	// connection, acknowledged; another gateway's usage subject is denied.
	if _, err := gw.js.Publish(t.Context(), usGW.UsageSubject(), []byte("flush"), jetstream.WithMsgID("us.gw-us-1.boot.1"),
		jetstream.WithExpectStream(natsauth.UsageStream)); err != nil {
		t.Errorf("the region's gateway publishes usage to the hub: %v", err)
	}
	gw.deniedPublish(t, "infergate.usage.us.gw-us-2")

	// The region's mirrors of the hub's stream and snapshot bucket, made
	// by the region's admin on the leaf server and the control plane on
	// the hub (their feeds), as create-mirror does, and fed through the
	// leaf connection as the leaf user; the region's gateway reads them
	// there.
	admin := connectTo(leaf.ClientURL(), seeds, nats.RootCAs(caFile))(t, deployUsers["INFERGATE_NKEY_REGION_ADMIN_US"])
	if _, err := eventstore.CreateMirror(t.Context(), admin.js, cp.js, eventstore.MirrorConfig{Region: "us"}); err != nil {
		t.Fatalf("create the region's mirror: %v", err)
	}
	if _, err := snapshots.CreateMirror(t.Context(), admin.js, cp.js, snapshots.MirrorConfig{Region: "us"}); err != nil {
		t.Fatalf("create the region's snapshot mirror: %v", err)
	}
	admin.noViolations(t)
	admin.denied(t, "$JS.API.STREAM.PURGE."+natsauth.EventStream, func(ctx context.Context) error {
		s, err := admin.js.Stream(ctx, natsauth.EventStream)
		if err != nil {
			return nil // not the check this is
		}
		return s.Purge(ctx)
	})
	admin.denied(t, "$JS.API.CONSUMER.CREATE."+natsauth.EventStream, func(ctx context.Context) error {
		_, err := admin.js.OrderedConsumer(ctx, natsauth.EventStream, jetstream.OrderedConsumerConfig{})
		return err
	})
	hubLast, err := events.LastSequence(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// The region's gateway opens the mirror as the gateway process does
	// (--hub-domain hub): its user may read the mirror and check the hub
	// stream's life through the hub's domain, nothing more.
	gwHub, err := jetstream.NewWithDomain(gw.nc, "hub")
	if err != nil {
		t.Fatal(err)
	}
	mirror, err := eventstore.OpenMirror(t.Context(), gw.js, gwHub, eventstore.MirrorConfig{})
	if err != nil {
		t.Fatalf("the region's gateway opens the mirror: %v", err)
	}
	waitFor(t, "the mirror caught up with the hub", func() bool {
		st, err := mirror.State(t.Context())
		return err == nil && st.LastSeq == hubLast && st.Identity().Equal(identity)
	})
	recs, _, err := mirror.Load(t.Context(), eventstore.Aggregate{Project: "p", Type: eventstore.TypeKey, Name: "alpha"})
	if err != nil || len(recs) == 0 || recs[len(recs)-1].Sequence != hubLast {
		t.Errorf("the region's gateway reads the mirror: %v, %v", recs, err)
	}
	// And starts from the snapshot the control plane saved on the hub
	// (checkRoles), copied into the region.
	snaps, err := snapshots.Open(t.Context(), gw.js, snapshots.Config{ReadOnly: true})
	if err != nil {
		t.Fatalf("the region's gateway opens the snapshot mirror: %v", err)
	}
	waitFor(t, "the region's gateway restores the hub's snapshot from the region's copy", func() bool {
		st, err := mirror.State(t.Context())
		if err != nil {
			return false
		}
		info, err := snaps.Restore(t.Context(), authmap.New(), st)
		return err == nil && info.Sequence > 0
	})
	gw.noViolations(t)
}

// checkUsers compares the nkey users of a loaded config with natsauth's
// identities.
func checkUsers(t *testing.T, file string, opts *server.Options, seeds string, added ...natsauth.Identity) {
	t.Helper()
	ids := map[string]natsauth.Identity{}
	skip := map[string]bool{}
	for _, id := range added {
		pub, err := id.Ensure(seeds)
		if err != nil {
			t.Fatal(err)
		}
		skip[pub] = true
	}
	for _, id := range deployUsers {
		pub, err := id.Ensure(seeds)
		if err != nil {
			t.Fatal(err)
		}
		ids[pub] = id
	}
	users := opts.Nkeys
	if len(users) == 0 {
		t.Fatalf("%s defines no nkey users", file)
	}
	for _, u := range users {
		if skip[u.Nkey] {
			continue
		}
		id, ok := ids[u.Nkey]
		if !ok {
			t.Errorf("%s: user %s is none of the test's identities", file, u.Nkey)
			continue
		}
		want := id.User(u.Nkey)
		if !sameSet(u.Permissions.Publish.Allow, want.Permissions.Publish.Allow) ||
			!sameSet(u.Permissions.Subscribe.Allow, want.Permissions.Subscribe.Allow) ||
			len(u.Permissions.Publish.Deny) != 0 || len(u.Permissions.Subscribe.Deny) != 0 || u.Permissions.Response != nil {
			t.Errorf("%s: %s's permissions\n%+v %+v\nare not natsauth's\n%+v %+v", file, id.Name(),
				u.Permissions.Publish, u.Permissions.Subscribe, want.Permissions.Publish, want.Permissions.Subscribe)
		}
		for typ := range want.AllowedConnectionTypes {
			if _, ok := u.AllowedConnectionTypes[typ]; !ok || len(u.AllowedConnectionTypes) != len(want.AllowedConnectionTypes) {
				t.Errorf("%s: %s's connection types %v, want %v", file, id.Name(), u.AllowedConnectionTypes, want.AllowedConnectionTypes)
			}
		}
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// runConfig writes conf, with every substitution made (each must apply),
// to path, and runs a server from it until the test ends.
func runConfig(t *testing.T, path, conf string, subs [][2]string) (*server.Server, *server.Options) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(conf, sub[0]) {
			t.Fatalf("%s: %q not found; the test and the file have drifted apart", filepath.Base(path), sub[0])
		}
		conf = strings.ReplaceAll(conf, sub[0], sub[1])
	}
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	opts.NoLog, opts.NoSigs = os.Getenv("NATS_LOGS") == "", true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	if !opts.NoLog {
		s.ConfigureLogger()
	}
	go s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(30 * time.Second) {
		t.Fatalf("%s: server not ready", filepath.Base(path))
	}
	return s, opts
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// freePort is a port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// writeCA makes a CA and one certificate for every server (127.0.0.1,
// localhost), good for server and client auth as deploy/nats asks, and
// writes them as deploy/nats names them; it returns the CA's file.
func writeCA(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "infergate test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "nats"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write("server.pem", "CERTIFICATE", der)
	write("server-key.pem", "EC PRIVATE KEY", keyDER)
	return write("ca.pem", "CERTIFICATE", caDER)
}
