package controlplane_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/reflect/protoreflect"

	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/controlplane"
)

// keysStub stands in for the key service: the test is about what runs in
// front of a handler. GetKey answers with the caller's principal.
type keysStub struct {
	keyv1connect.UnimplementedKeyServiceHandler
}

func (keysStub) GetKey(ctx context.Context, req *connect.Request[keyv1.GetKeyRequest]) (*connect.Response[keyv1.GetKeyResponse], error) {
	p, _ := adminauth.FromContext(ctx)
	return connect.NewResponse(&keyv1.GetKeyResponse{Key: &keyv1.Key{
		Project: req.Msg.GetProject(), Name: req.Msg.GetName(), Description: "called by " + p.Name,
	}}), nil
}

type plane struct {
	url         string
	ops, teamA  string // tokens: every project; team-a only
	h1, h2c     *http.Client
	releaseBody chan struct{} // closed at the test's end
}

// startPlane serves the key stub the way every control-plane process
// does: HandlerOptions, Mux and Serve.
func startPlane(t testing.TB) *plane {
	t.Helper()
	ops, opsEntry, err := adminauth.New("ops", []string{adminauth.AllProjects})
	if err != nil {
		t.Fatal(err)
	}
	teamA, teamEntry, err := adminauth.New("team-a-admin", []string{"team-a"})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := adminauth.FromEntries([]adminauth.Entry{opsEntry, teamEntry})
	if err != nil {
		t.Fatal(err)
	}
	p := &controlplane.Plane{Tokens: tokens, Log: slog.New(slog.DiscardHandler)}
	path, h := keyv1connect.NewKeyServiceHandler(keysStub{}, p.HandlerOptions()...)
	mux := controlplane.Mux(map[string]http.Handler{path: h}, keyv1connect.KeyServiceName)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, ln, mux, 5*time.Second) }()

	h2 := new(http.Protocols)
	h2.SetUnencryptedHTTP2(true)
	pl := &plane{
		url: "http://" + ln.Addr().String(), ops: ops, teamA: teamA,
		h1:          &http.Client{Transport: &http.Transport{}},
		h2c:         &http.Client{Transport: &http.Transport{Protocols: h2}},
		releaseBody: make(chan struct{}),
	}
	t.Cleanup(func() {
		close(pl.releaseBody)
		pl.h1.CloseIdleConnections()
		pl.h2c.CloseIdleConnections()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return pl
}

// bombBytes is how much a gzip bomb inflates to.
const bombBytes = 100 << 20

// bomb is bombBytes of zeros as a ~100 KB gzip stream: 100 gzip members
// of 1 MiB each (a gzip reader reads concatenated members as one
// stream), so making it costs one MiB of compression.
var bomb = sync.OnceValue(func() []byte {
	var member bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
	_, _ = zw.Write(make([]byte, 1<<20))
	_ = zw.Close()
	return bytes.Repeat(member.Bytes(), bombBytes>>20)
})

// protocol is one wire protocol of a unary call, spoken by hand so that
// the client never holds a decompressed message.
type protocol struct {
	name   string
	client func(*plane) *http.Client
	header http.Header
	// frame wraps a compressed message for the wire.
	frame func(msg []byte, compressed bool) []byte
	// code reads the call's status from a finished response.
	code func(t *testing.T, res *http.Response, body []byte) connect.Code
}

func envelope(msg []byte, compressed bool) []byte {
	out := make([]byte, 5, 5+len(msg))
	if compressed {
		out[0] = 1
	}
	binary.BigEndian.PutUint32(out[1:], uint32(len(msg)))
	return append(out, msg...)
}

func grpcStatus(t *testing.T, values ...string) connect.Code {
	t.Helper()
	for _, v := range values {
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("grpc-status %q", v)
		}
		return connect.Code(n)
	}
	t.Fatal("no grpc-status")
	return 0
}

var protocols = []protocol{{
	name:   "connect",
	client: func(p *plane) *http.Client { return p.h1 },
	header: http.Header{"Content-Type": {"application/proto"}, "Connect-Protocol-Version": {"1"}},
	frame: func(msg []byte, _ bool) []byte {
		return msg
	},
	code: func(t *testing.T, res *http.Response, body []byte) connect.Code {
		var wire struct{ Code string }
		if err := json.Unmarshal(body, &wire); err != nil {
			t.Fatalf("HTTP %d, body %q: %v", res.StatusCode, body, err)
		}
		var c connect.Code
		if err := c.UnmarshalText([]byte(wire.Code)); err != nil {
			t.Fatal(err)
		}
		return c
	},
}, {
	name:   "grpc",
	client: func(p *plane) *http.Client { return p.h2c },
	header: http.Header{"Content-Type": {"application/grpc"}, "Te": {"trailers"}},
	frame:  envelope,
	code: func(t *testing.T, res *http.Response, _ []byte) connect.Code {
		return grpcStatus(t, res.Header.Get("Grpc-Status"), res.Trailer.Get("Grpc-Status"))
	},
}, {
	name:   "grpc-web",
	client: func(p *plane) *http.Client { return p.h1 },
	header: http.Header{"Content-Type": {"application/grpc-web+proto"}},
	frame:  envelope,
	code: func(t *testing.T, res *http.Response, body []byte) connect.Code {
		// Trailers-only in the headers, or a trailers frame in the body.
		_, trailer, _ := strings.Cut(strings.ToLower(string(body)), "grpc-status:")
		trailer, _, _ = strings.Cut(trailer, "\r\n")
		return grpcStatus(t, res.Header.Get("Grpc-Status"), strings.TrimSpace(trailer))
	},
}}

// call sends body to procedure and returns the call's code. With
// holdOpen the body is sent but never ends: only a server that answers
// without reading it to the end answers at all.
func (pr protocol) call(t *testing.T, p *plane, procedure, token string, body []byte, compressed, holdOpen bool) connect.Code {
	t.Helper()
	var reader io.Reader = bytes.NewReader(body)
	if holdOpen {
		pr, pw := io.Pipe()
		go func() {
			if _, err := pw.Write(body); err == nil {
				<-p.releaseBody
			}
			pw.Close()
		}()
		reader = pr
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+procedure, reader)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range pr.header {
		req.Header[k] = v
	}
	if compressed {
		if pr.name == "connect" {
			req.Header.Set("Content-Encoding", "gzip")
		} else {
			req.Header.Set("Grpc-Encoding", "gzip")
		}
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := pr.client(p).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", pr.name, procedure, err)
	}
	defer res.Body.Close()
	resBody, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read the answer: %v", pr.name, procedure, err)
	}
	return pr.code(t, res, resBody)
}

// allocated returns how many bytes the process allocated on its heap
// while f ran: an upper bound on how much the heap grew, whatever the
// garbage collector did meanwhile.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// heapBound is what one hostile request may cost the heap (issue 11).
const heapBound = 20 << 20

// TestGzipBomb sends 100 MB of zeros as ~100 KB of gzip, the way issue 11
// took a control plane from 36 MB to 401 MB. Without a token the call is
// refused before the body is read — the body never even ends; with one,
// the message limit refuses it as resource_exhausted. Either way the
// process allocates less than heapBound. Not parallel: the allocation
// count is the whole process's.
func TestGzipBomb(t *testing.T) {
	p := startPlane(t)
	payload := bomb()
	plain := make([]byte, 2*controlplane.MaxMessageBytes)
	for _, pr := range protocols {
		for _, c := range []struct {
			name       string
			token      string
			body       []byte
			compressed bool
			want       connect.Code
		}{
			{"no token", "", payload, true, connect.CodeUnauthenticated},
			{"wrong token", "igadm_wrong", payload, true, connect.CodeUnauthenticated},
			{"valid token", p.ops, payload, true, connect.CodeResourceExhausted},
			{"valid token, 2 MiB uncompressed", p.ops, plain, false, connect.CodeResourceExhausted},
		} {
			t.Run(pr.name+"/"+c.name, func(t *testing.T) {
				body := pr.frame(c.body, c.compressed)
				var got connect.Code
				n := allocated(func() {
					got = pr.call(t, p, keyv1connect.KeyServiceCreateKeyProcedure, c.token, body, c.compressed, c.want == connect.CodeUnauthenticated)
				})
				if got != c.want {
					t.Errorf("code %v, want %v", got, c.want)
				}
				t.Logf("allocated %d KiB", n>>10)
				if n >= heapBound {
					t.Errorf("the call allocated %d MiB, want < %d MiB", n>>20, heapBound>>20)
				}
			})
		}
	}
}

// TestTokenAndScope: the token is checked before the body, the project
// scope after decoding, and the handler sees the principal.
func TestTokenAndScope(t *testing.T) {
	t.Parallel()
	p := startPlane(t)
	for _, proto := range []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
	}{
		{"connect", p.h1, nil},
		{"grpc", p.h2c, []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-web", p.h1, []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		for _, c := range []struct {
			token, project string
			want           connect.Code
			caller         string
		}{
			{"", "team-a", connect.CodeUnauthenticated, ""},
			{"igadm_wrong", "team-a", connect.CodeUnauthenticated, ""},
			{p.teamA, "team-b", connect.CodePermissionDenied, ""},
			{p.teamA, "team-a", 0, "team-a-admin"},
			{p.ops, "team-b", 0, "ops"},
		} {
			opts := proto.opts
			if c.token != "" {
				opts = append(slices.Clone(opts), connect.WithInterceptors(adminauth.NewClientInterceptor(c.token)))
			}
			client := keyv1connect.NewKeyServiceClient(proto.client, p.url, opts...)
			res, err := client.GetKey(t.Context(), connect.NewRequest(&keyv1.GetKeyRequest{Project: c.project, Name: "some-key"}))
			switch {
			case connect.CodeOf(err) != c.want && (err != nil || c.want != 0):
				t.Errorf("%s: GetKey(%s) with %q: %v, want %v", proto.name, c.project, c.caller, err, c.want)
			case err == nil && res.Msg.GetKey().GetDescription() != "called by "+c.caller:
				t.Errorf("%s: the handler saw %q, want %q", proto.name, res.Msg.GetKey().GetDescription(), c.caller)
			}
		}
	}
}

// TestReflectionAndHealth: reflection tells the API's shape only to an
// admin; health answers anyone.
func TestReflectionAndHealth(t *testing.T) {
	t.Parallel()
	p := startPlane(t)
	for _, proto := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	} {
		reflect := grpcreflect.NewClient(p.h2c, p.url, proto.opts...)
		stream := reflect.NewStream(t.Context())
		if _, err := stream.ListServices(); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("%s: reflection without a token: %v, want unauthenticated", proto.name, err)
		}
		_, _ = stream.Close()
		stream = reflect.NewStream(t.Context(), grpcreflect.WithRequestHeaders(http.Header{"Authorization": {"Bearer " + p.teamA}}))
		names, err := stream.ListServices()
		if err != nil || !slices.Contains(names, protoreflect.FullName(keyv1connect.KeyServiceName)) {
			t.Errorf("%s: reflection with a token: %v, %v", proto.name, names, err)
		}
		_, _ = stream.Close()

		health := grpchealth.NewClient(p.h2c, p.url, proto.opts...)
		res, err := health.Check(t.Context(), &grpchealth.CheckRequest{Service: keyv1connect.KeyServiceName})
		if err != nil || res.Status != grpchealth.StatusServing {
			t.Errorf("%s: health without a token: %v, %v", proto.name, res, err)
		}
	}
}

// TestUnknownPathsNeedAToken: nothing but health answers without a token,
// not even "not found", and health's open prefix leads nowhere else.
func TestUnknownPathsNeedAToken(t *testing.T) {
	t.Parallel()
	p := startPlane(t)
	for _, path := range []string{
		"/grpc.health.v1.Health/../infergate.key.v1.KeyService/GetKey",
		"/grpc.health.v1.Health/%2e%2e/infergate.key.v1.KeyService/GetKey",
	} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, p.url+path, strings.NewReader(`{"project":"team-a","name":"some-key"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := (&http.Client{
			Transport:     p.h1.Transport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode == http.StatusOK || strings.Contains(string(body), "called by") {
			t.Errorf("POST %s without a token: HTTP %d %s", path, res.StatusCode, body)
		}
	}
	for token, want := range map[string]int{"": http.StatusUnauthorized, p.ops: http.StatusNotFound} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, p.url+"/demo-model/v1/models", nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := p.h1.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("GET /demo-model/v1/models with token %t: HTTP %d, want %d", token != "", res.StatusCode, want)
		}
		if want == http.StatusUnauthorized && !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without WWW-Authenticate: Bearer: %q", res.Header.Get("WWW-Authenticate"))
		}
	}
}
