package faults_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// ask sends one request for a deployment through a gateway with a key and
// returns the status (0 for a transport error) and the error code, if any.
func (s *stack) ask(g *gatewayProc, project, dep, secret string) (int, string) {
	ctx, cancel := callCtx(3 * time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", g.url+"/d/"+project+"/"+dep+"/v1/models", nil)
	if secret != "" {
		req.Header.Set("X-API-Key", secret)
	}
	res, err := s.gwHTTP.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if res.StatusCode != 200 {
		_ = json.Unmarshal(body, &e)
	}
	return res.StatusCode, e.Error.Code
}

// waitAnswer waits until every gateway answers the key with want.
func (s *stack) waitAnswer(project, dep, secret string, want int) {
	s.t.Helper()
	for _, g := range s.gateways {
		waitUntil(s.t, waitLong, fmt.Sprintf("%s answers %d for %s/%s", g.id, want, project, dep), func() error {
			if got, code := s.ask(g, project, dep, secret); got != want {
				return fmt.Errorf("got %d %s", got, code)
			}
			return nil
		})
	}
}

// traffic sends requests with one key to every gateway, one client per
// gateway, until stop, and records every answer.
type traffic struct {
	mu      sync.Mutex // mu protects answers
	answers []answer
	stop    context.CancelFunc
	done    sync.WaitGroup
}

type answer struct {
	gateway string
	at      time.Time // when the request was sent
	status  int
	code    string
}

func (s *stack) startTraffic(project, dep, secret string) *traffic {
	ctx, stop := context.WithCancel(context.Background())
	tr := &traffic{stop: stop}
	for _, g := range s.gateways {
		tr.done.Go(func() {
			for ctx.Err() == nil {
				at := time.Now()
				st, code := s.ask(g, project, dep, secret)
				tr.mu.Lock()
				tr.answers = append(tr.answers, answer{g.id, at, st, code})
				tr.mu.Unlock()
				// A client's pace, not a wait for anything.
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Millisecond):
				}
			}
		})
	}
	s.t.Cleanup(tr.halt)
	return tr
}

// halt stops the traffic and waits for the clients.
func (tr *traffic) halt() {
	tr.stop()
	tr.done.Wait()
}

// since is every answer to a request sent at or after t.
func (tr *traffic) since(t time.Time) []answer {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []answer
	for _, a := range tr.answers {
		if !a.at.Before(t) {
			out = append(out, a)
		}
	}
	return out
}

// between is every answer to a request sent in [from, to).
func (tr *traffic) between(from, to time.Time) []answer {
	var out []answer
	for _, a := range tr.since(from) {
		if a.at.Before(to) {
			out = append(out, a)
		}
	}
	return out
}

// tally counts answers by status, e.g. "200×41 401×3".
func tally(as []answer) string {
	n := map[int]int{}
	for _, a := range as {
		n[a.status]++
	}
	var codes []int
	for c := range n {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d×%d", c, n[c]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// countStatus is how many answers had the status.
func countStatus(as []answer, status int) int {
	n := 0
	for _, a := range as {
		if a.status == status {
			n++
		}
	}
	return n
}
