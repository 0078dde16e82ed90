package e2e_test

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/demomodel"
)

// e2eShortLife is how long the story's second key lives: long enough for
// the steps that use it before it expires, even under -race on a busy
// machine, short enough to wait for.
const e2eShortLife = 3 * time.Second

// TestStory is the seed's story through the real stack: keys, a deployment
// with auth, the OpenAI SDK, refusals, and every change holding from the
// next request on.
func TestStory(t *testing.T) {
	t.Parallel()
	s := e2eStart(t, t.TempDir())
	upstream := e2eDemoUpstream(t)
	const project, dep = "acme", "chat"

	// 1. Two keys, one never expiring and one about to; a deployment with
	// auth on and the first key linked, in front of the demo model.
	first, firstSecret := s.createKey(t, project, "primary", time.Time{})
	second, secondSecret := s.createKey(t, project, "shortlived", time.Now().Add(e2eShortLife))
	if first.GetExpiresAt() != nil {
		t.Errorf("primary expires at %v, want never", first.GetExpiresAt().AsTime())
	}
	if second.GetExpiresAt() == nil {
		t.Fatal("shortlived has no expiry")
	}
	expiry := second.GetExpiresAt().AsTime()
	for _, k := range []struct {
		key    *keyv1.Key
		secret string
	}{{first, firstSecret}, {second, secondSecret}} {
		if !apikey.WellFormed(k.secret) || k.key.GetHint() != apikey.Hint(k.secret) {
			t.Errorf("key %s: secret not well formed or hint %q does not match it", k.key.GetName(), k.key.GetHint())
		}
	}
	s.createDeployment(t, project, dep, upstream, true, "primary")
	d := s.waitDeployed(t, project, dep)
	if want := "http://" + s.hostName(project, dep); d.GetEndpointUrl() != want {
		t.Errorf("endpoint_url = %q, want %q", d.GetEndpointUrl(), want)
	}
	if !d.GetAuthEnabled() || !slices.Equal(d.GetApiKeys(), []string{"primary"}) {
		t.Errorf("deployment auth %v keys %v, want on with [primary]", d.GetAuthEnabled(), d.GetApiKeys())
	}

	t.Run("OpenAISDK", func(t *testing.T) { e2eStorySDK(t, s, project, dep, firstSecret) })
	t.Run("Refusals", func(t *testing.T) {
		for _, route := range e2eRoutes {
			s.expectAnswer(t, route, project, dep, e2eKey(firstSecret))
			s.expectRefused(t, route, project, dep, nil, "missing_api_key")
			// An Authorization that is not an infergate key (an SDK's dummy
			// api_key) is no key at all.
			s.expectRefused(t, route, project, dep, e2eBearer("sk-dummy"), "missing_api_key")
			unknown, err := apikey.Generate()
			if err != nil {
				t.Fatal(err)
			}
			s.expectRefused(t, route, project, dep, e2eKey(unknown), "invalid_api_key")
			s.expectRefused(t, route, project, dep, e2eBearer(unknown), "invalid_api_key")
			for _, malformed := range []string{"ig_nope", "not-an-infergate-key", e2eBreakChecksum(firstSecret)} {
				s.expectRefused(t, route, project, dep, e2eKey(malformed), "invalid_api_key")
			}
			s.expectRefused(t, route, project, dep, e2eKey(secondSecret), "invalid_api_key")
			s.expectRefused(t, route, project, dep, e2eBearer(secondSecret), "invalid_api_key")
		}
	})
	t.Run("ChangesHoldFromTheNextRequest", func(t *testing.T) {
		ctx := e2eCtx(t)
		// The second key must be let in before it expires; a machine so
		// slow that it got here too late cannot tell us anything.
		secondWorks := func() {
			t.Helper()
			if left := time.Until(expiry); left < 300*time.Millisecond {
				t.Fatalf("only %s left before shortlived expires: the test ran too slowly to check it (raise e2eShortLife)", left)
			}
			s.expectAnswer(t, e2eByHost, project, dep, e2eKey(secondSecret))
		}

		link, err := s.deps.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: project, Deployment: dep, Key: "shortlived"}))
		if err != nil {
			t.Fatalf("LinkKey: %v", err)
		}
		s.waitApplied(t, link.Msg.GetPropagation(), true)
		secondWorks()
		s.expectAnswer(t, e2eByPath, project, dep, e2eKey(firstSecret))

		unlink, err := s.deps.UnlinkKey(ctx, connect.NewRequest(&deploymentv1.UnlinkKeyRequest{Project: project, Deployment: dep, Key: "primary"}))
		if err != nil {
			t.Fatalf("UnlinkKey: %v", err)
		}
		s.waitApplied(t, unlink.Msg.GetPropagation(), true)
		s.expectRefused(t, e2eByHost, project, dep, e2eKey(firstSecret), "invalid_api_key")
		s.expectRefused(t, e2eByPath, project, dep, e2eBearer(firstSecret), "invalid_api_key")
		secondWorks()

		off, err := s.deps.UpdateDeploymentAuth(ctx, connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{
			Project: project, Name: dep, AuthEnabled: false, ApiKeys: []string{"shortlived"},
		}))
		if err != nil {
			t.Fatalf("UpdateDeploymentAuth off: %v", err)
		}
		s.waitApplied(t, off.Msg.GetPropagation(), true)
		// Auth off: everything is let through, whatever its headers.
		s.expectAnswer(t, e2eByHost, project, dep, nil)
		s.expectAnswer(t, e2eByPath, project, dep, e2eKey("ig_nope"))
		s.expectAnswer(t, e2eByHost, project, dep, e2eKey(firstSecret))

		on, err := s.deps.UpdateDeploymentAuth(ctx, connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{
			Project: project, Name: dep, AuthEnabled: true, ApiKeys: []string{"primary", "shortlived"},
		}))
		if err != nil {
			t.Fatalf("UpdateDeploymentAuth on: %v", err)
		}
		s.waitApplied(t, on.Msg.GetPropagation(), true)
		s.expectRefused(t, e2eByHost, project, dep, nil, "missing_api_key")
		s.expectAnswer(t, e2eByPath, project, dep, e2eKey(firstSecret))
		secondWorks()

		del, err := s.keys.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: project, Name: "primary"}))
		if err != nil {
			t.Fatalf("DeleteKey: %v", err)
		}
		s.waitApplied(t, del.Msg.GetPropagation(), true)
		s.expectRefused(t, e2eByHost, project, dep, e2eKey(firstSecret), "invalid_api_key")
		s.expectRefused(t, e2eByPath, project, dep, e2eBearer(firstSecret), "invalid_api_key")
		secondWorks()
		got, err := s.deps.GetDeployment(ctx, connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: project, Name: dep}))
		if err != nil {
			t.Fatalf("GetDeployment: %v", err)
		}
		if keys := got.Msg.GetDeployment().GetApiKeys(); !slices.Equal(keys, []string{"shortlived"}) {
			t.Errorf("after deleting primary the deployment links %v, want [shortlived]", keys)
		}

		// Expiry is the gateway's own clock: no event says the key expired.
		// The gateway runs in this process, so our clock is its clock.
		for time.Now().Before(expiry.Add(time.Millisecond)) {
			time.Sleep(time.Until(expiry) + 2*time.Millisecond)
		}
		for _, route := range e2eRoutes {
			s.expectRefused(t, route, project, dep, e2eKey(secondSecret), "invalid_api_key")
			s.expectRefused(t, route, project, dep, e2eBearer(secondSecret), "invalid_api_key")
		}
	})
}

// e2eStorySDK is point 2: the official OpenAI Go SDK against the gateway's
// path routing URL, as a user without *.localhost resolution would.
func e2eStorySDK(t *testing.T, s *e2eStack, project, dep, secret string) {
	base := s.pathURL(project, dep) + "/v1/"
	common := []option.RequestOption{option.WithBaseURL(base), option.WithHTTPClient(s.client), option.WithMaxRetries(0)}
	params := openai.ChatCompletionNewParams{
		Model:    demomodel.ModelID,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello!")},
	}
	want := demomodel.Answer("Hello!")

	t.Run("XAPIKeyHeader", func(t *testing.T) {
		// Exactly the seed's Python example: a dummy api_key, the key in
		// X-API-Key.
		client := openai.NewClient(append(common, option.WithAPIKey("sk-dummy"), option.WithHeader("X-API-Key", secret))...)
		c, err := client.Chat.Completions.New(e2eCtx(t), params)
		if err != nil {
			t.Fatalf("chat completion: %v", err)
		}
		if len(c.Choices) != 1 || c.Choices[0].Message.Content != want {
			t.Fatalf("choices %+v, want one with %q", c.Choices, want)
		}
		if c.Model != demomodel.ModelID || c.Usage.TotalTokens == 0 || c.Choices[0].FinishReason != "stop" {
			t.Errorf("model %q, usage %+v, finish %q: not a whole completion", c.Model, c.Usage, c.Choices[0].FinishReason)
		}
	})
	t.Run("Streaming", func(t *testing.T) {
		client := openai.NewClient(append(common, option.WithAPIKey("sk-dummy"), option.WithHeader("X-API-Key", secret))...)
		p := params
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		stream := client.Chat.Completions.NewStreaming(e2eCtx(t), p)
		defer stream.Close()
		var (
			text   strings.Builder
			chunks int
			usage  int64
		)
		for stream.Next() {
			chunk := stream.Current()
			if len(chunk.Choices) > 0 && chunk.Choices[0].Delta.Content != "" {
				text.WriteString(chunk.Choices[0].Delta.Content)
				chunks++
			}
			usage += chunk.Usage.TotalTokens
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %v", err)
		}
		if text.String() != want {
			t.Errorf("streamed text %q, want %q", text.String(), want)
		}
		if chunks < 5 {
			t.Errorf("%d content chunks, want the answer in several", chunks)
		}
		if usage == 0 {
			t.Error("no usage chunk")
		}
	})
	t.Run("BearerAPIKey", func(t *testing.T) {
		// The key as the SDK's own api_key: Authorization: Bearer, no X-API-Key.
		client := openai.NewClient(append(common, option.WithAPIKey(secret))...)
		c, err := client.Chat.Completions.New(e2eCtx(t), params)
		if err != nil {
			t.Fatalf("chat completion: %v", err)
		}
		if len(c.Choices) != 1 || c.Choices[0].Message.Content != want {
			t.Fatalf("choices %+v, want one with %q", c.Choices, want)
		}
	})
	t.Run("NoKeyIsAnAPIError", func(t *testing.T) {
		client := openai.NewClient(append(common, option.WithAPIKey("sk-dummy"))...)
		_, err := client.Chat.Completions.New(e2eCtx(t), params)
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("err = %v, want an *openai.Error", err)
		}
		if apiErr.StatusCode != http.StatusUnauthorized || apiErr.Code != "missing_api_key" || apiErr.Type != "invalid_request_error" {
			t.Errorf("status %d code %q type %q, want 401 missing_api_key invalid_request_error", apiErr.StatusCode, apiErr.Code, apiErr.Type)
		}
	})
}

// e2eBreakChecksum changes a secret's last character: same length and
// alphabet, wrong checksum.
func e2eBreakChecksum(secret string) string {
	last := secret[len(secret)-1]
	repl := byte('A')
	if last == 'A' {
		repl = 'B'
	}
	return secret[:len(secret)-1] + string(repl)
}
