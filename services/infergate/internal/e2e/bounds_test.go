package e2e_test

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
)

// TestControlPlaneBounds: the one-process stack's control plane gets the
// bounds every control-plane process has (services/internal/controlplane
// tests them in depth): a gzip bomb without a token is refused before its
// body is read, one with a token is refused by the message limit,
// reflection needs a token and health does not.
func TestControlPlaneBounds(t *testing.T) {
	t.Parallel()
	s := e2eStart(t, t.TempDir())
	h2 := new(http.Protocols)
	h2.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: h2}}
	t.Cleanup(h2c.CloseIdleConnections)

	// 100 MiB of zeros in ~100 KB: 100 gzip members of 1 MiB each.
	var member bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
	_, _ = zw.Write(make([]byte, 1<<20))
	_ = zw.Close()
	bomb := bytes.Repeat(member.Bytes(), 100)

	// Connect, no token: the body never ends, so only an answer that does
	// not wait for it arrives.
	body, open := io.Pipe()
	go func() {
		if _, err := open.Write(bomb); err == nil {
			<-t.Context().Done()
		}
		open.Close()
	}()
	req, err := http.NewRequestWithContext(e2eCtx(t), http.MethodPost, s.APIURL+keyv1connect.KeyServiceCreateKeyProcedure, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/proto")
	req.Header.Set("Content-Encoding", "gzip")
	res, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var wire struct{ Code string }
	err = json.NewDecoder(res.Body).Decode(&wire)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusUnauthorized || wire.Code != "unauthenticated" {
		t.Errorf("a gzip bomb without a token: HTTP %d, code %q, %v; want 401 unauthenticated", res.StatusCode, wire.Code, err)
	}

	// gRPC, admin token: the message limit.
	msg := make([]byte, 5, 5+len(bomb))
	msg[0] = 1 // compressed
	binary.BigEndian.PutUint32(msg[1:], uint32(len(bomb)))
	req, err = http.NewRequestWithContext(e2eCtx(t), http.MethodPost, s.APIURL+keyv1connect.KeyServiceCreateKeyProcedure, bytes.NewReader(append(msg, bomb...)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Grpc-Encoding", "gzip")
	req.Header.Set("Te", "trailers")
	req.Header.Set("Authorization", "Bearer "+s.Token)
	res, err = h2c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	status := res.Header.Get("Grpc-Status") + res.Trailer.Get("Grpc-Status")
	if status != "8" { // resource_exhausted
		t.Errorf("a gzip bomb with a token over gRPC: grpc-status %q, want 8 (resource_exhausted)", status)
	}

	reflect := grpcreflect.NewClient(h2c, s.APIURL, connect.WithGRPC())
	stream := reflect.NewStream(e2eCtx(t))
	if _, err := stream.ListServices(); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("reflection without a token: %v, want unauthenticated", err)
	}
	_, _ = stream.Close()
	stream = reflect.NewStream(e2eCtx(t), grpcreflect.WithRequestHeaders(http.Header{"Authorization": {"Bearer " + s.Token}}))
	names, err := stream.ListServices()
	if err != nil || !slices.Contains(names, protoreflect.FullName(keyv1connect.KeyServiceName)) {
		t.Errorf("reflection with a token: %v, %v", names, err)
	}
	_, _ = stream.Close()

	health, err := grpchealth.NewClient(h2c, s.APIURL, connect.WithGRPC()).Check(e2eCtx(t), &grpchealth.CheckRequest{})
	if err != nil || health.Status != grpchealth.StatusServing {
		t.Errorf("health without a token: %v, %v", health, err)
	}
}
