package faults_test

import (
	"context"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"

	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
)

// TestServiceCannotChangeTheStream starts control-plane services whose
// idea of the stream differs from the stream an operator made (issue 10
// point 1): the stream's configuration has one owner, and starting a
// service never changes it.
//   - A service told to expect a different replica count
//     (--stream-replicas) stops at start-up with an error that names the
//     stream, the expected count and the actual one; the stream is
//     untouched.
//   - A service started with its defaults against a stream the operator
//     configured otherwise (here a 10-minute duplicate window) leaves the
//     stream as it was, whether it then serves or refuses to start.
func TestServiceCannotChangeTheStream(t *testing.T) {
	s := newStack(t)
	fig := newFigures(t, "service started with a different expected stream configuration")

	t.Run("expected replicas differ", func(t *testing.T) {
		before := s.streamInfo()
		for _, svc := range []struct{ name, bin string }{
			{"infergate-keys", bins.keys},
			{"infergate-audit", bins.audit},
		} {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			p := startProc(t, svc.name, svc.bin, s.serviceArgs(addr, "--stream-replicas", "3")...)
			exited, err := p.wait(waitLong)
			out := p.out.String()
			fig.set(svc.name+"_with_replicas_3_exited", exited)
			if !exited {
				t.Errorf("%s --stream-replicas 3 against a 1-replica stream still runs after %s; want a start-up error", svc.name, waitLong)
				continue
			}
			if err == nil {
				t.Errorf("%s --stream-replicas 3 against a 1-replica stream exited 0; want a start-up error", svc.name)
			}
			line := lastLine(out)
			fig.set(svc.name+"_error", fmt.Sprintf("%q", line))
			// The error names the stream, replicas, the expected 3 and the
			// actual 1 — not only a JetStream refusal to make 3 replicas.
			if !strings.Contains(line, streamName) || !regexp.MustCompile(`(?i)replica`).MatchString(line) ||
				!regexp.MustCompile(`\b3\b`).MatchString(line) || !regexp.MustCompile(`\b1\b`).MatchString(line) {
				t.Errorf("%s --stream-replicas 3 against a 1-replica stream: the start-up error %q does not name the stream %s, the expected replicas 3 and the actual 1",
					svc.name, line, streamName)
			}
		}
		after := s.streamInfo()
		if d := configDiff(before.Config, after.Config); d != "" || !before.Created.Equal(after.Created) {
			t.Errorf("starting services with --stream-replicas 3 changed the stream: %s (created %s → %s)", d, before.Created, after.Created)
		}
	})

	t.Run("operator settings survive a service start", func(t *testing.T) {
		// The operator chose a longer duplicate window than the services'
		// default; a service started with its defaults must not undo it.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := s.js.Stream(ctx, streamName)
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.Duplicates = 10 * time.Minute
		if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
			t.Fatalf("operator's update of the stream: %v", err)
		}
		before := s.streamInfo()
		for _, svc := range []struct{ name, bin string }{
			{"infergate-keys", bins.keys},
			{"infergate-audit", bins.audit},
		} {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			p := startProc(t, svc.name, svc.bin, s.serviceArgs(addr)...)
			// Started means serving or refusing, whichever comes first.
			var served bool
			err := poll(waitLong, func() error {
				if gone, _ := p.exited(); gone {
					return nil
				}
				ctx, cancel := callCtx(time.Second)
				defer cancel()
				if svc.name == "infergate-keys" {
					c := keyv1connect.NewKeyServiceClient(s.http, "http://"+addr, s.clientOpts())
					_, err := c.ListKeys(ctx, connect.NewRequest(&keyv1.ListKeysRequest{Project: "probe"}))
					served = err == nil
					return err
				}
				err := httpOK(ctx, s.http, "http://"+addr+"/grpc.health.v1.Health/Check", `{}`)
				served = err == nil
				return err
			})
			if err != nil {
				t.Fatalf("%s neither served nor exited: %v", svc.name, err)
			}
			outcome := "served"
			if !served {
				outcome = fmt.Sprintf("refused:%q", lastLine(p.out.String()))
			}
			fig.set(svc.name+"_default_flags_on_operator_stream", outcome)
			p.kill()
		}
		after := s.streamInfo()
		fig.set("duplicate_window_after_service_starts", after.Config.Duplicates)
		if d := configDiff(before.Config, after.Config); d != "" {
			t.Errorf("starting services with their default flags changed the operator's stream: %s", d)
		}
	})
}

// lastLine is the last non-empty line of a process's output: where a
// failed start says why.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

// configDiff names every field of the stream's configuration that differs,
// "Field: before → after", or is "" when none does.
func configDiff(before, after jetstream.StreamConfig) string {
	b, a := reflect.ValueOf(before), reflect.ValueOf(after)
	var diffs []string
	for i := range b.NumField() {
		if !reflect.DeepEqual(b.Field(i).Interface(), a.Field(i).Interface()) {
			diffs = append(diffs, fmt.Sprintf("%s: %v → %v", b.Type().Field(i).Name, b.Field(i).Interface(), a.Field(i).Interface()))
		}
	}
	return strings.Join(diffs, "; ")
}
