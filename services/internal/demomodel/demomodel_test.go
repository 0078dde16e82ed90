package demomodel_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/infergate/infergate/services/internal/demomodel"
)

func serve(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer((&demomodel.Server{}).Handler("/demo"))
	t.Cleanup(srv.Close)
	return srv.URL + "/demo"
}

func post(t *testing.T, url, body string) *http.Response {
	t.Helper()
	res, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func TestChatCompletion(t *testing.T) {
	t.Parallel()
	base := serve(t)
	res := post(t, base+"/v1/chat/completions", `{"model":"x","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"Hello there"}]}`)
	if res.StatusCode != 200 || res.Header.Get(demomodel.Header) != "true" {
		t.Fatalf("status %d, demo header %q", res.StatusCode, res.Header.Get(demomodel.Header))
	}
	var out struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message struct{ Role, Content string }
		}
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
			TotalTokens      int `json:"total_tokens"`
		}
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	want := demomodel.Answer("Hello there")
	if out.Object != "chat.completion" || out.Model != demomodel.ModelID || len(out.Choices) != 1 ||
		out.Choices[0].Message.Content != want || out.Choices[0].Message.Role != "assistant" {
		t.Errorf("response = %+v", out)
	}
	if out.Usage.PromptTokens != 4 || out.Usage.CompletionTokens != len(strings.Fields(want)) ||
		out.Usage.TotalTokens != out.Usage.PromptTokens+out.Usage.CompletionTokens {
		t.Errorf("usage = %+v", out.Usage)
	}
}

func TestStreamedChatCompletion(t *testing.T) {
	t.Parallel()
	base := serve(t)
	res := post(t, base+"/v1/chat/completions", `{"messages":[{"role":"user","content":"stream me"}],"stream":true,"stream_options":{"include_usage":true}}`)
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	var text strings.Builder
	var events int
	sawUsage, sawDone := false, false
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			sawDone = true
			break
		}
		events++
		var chunk struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct{ Content string }
			}
			Usage *struct {
				TotalTokens int `json:"total_tokens"`
			}
		}
		if err := json.Unmarshal([]byte(line), &chunk); err != nil {
			t.Fatal(err)
		}
		if chunk.Object != "chat.completion.chunk" {
			t.Errorf("chunk object %q", chunk.Object)
		}
		for _, c := range chunk.Choices {
			text.WriteString(c.Delta.Content)
		}
		if chunk.Usage != nil && chunk.Usage.TotalTokens > 0 {
			sawUsage = true
		}
	}
	if text.String() != demomodel.Answer("stream me") || events < 5 || !sawUsage || !sawDone {
		t.Errorf("streamed %q in %d events, usage %v, done %v", text.String(), events, sawUsage, sawDone)
	}
}

func TestModelsHealthAndErrors(t *testing.T) {
	t.Parallel()
	base := serve(t)
	for _, path := range []string{"/v1/models", "/health"} {
		res, err := http.Get(base + path)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", path, res, err)
		}
		res.Body.Close()
	}
	if res := post(t, base+"/v1/chat/completions", `not json`); res.StatusCode != 400 {
		t.Errorf("bad JSON: status %d", res.StatusCode)
	}
	if res := post(t, base+"/v1/embeddings", `{"input":["a","b"]}`); res.StatusCode != 200 {
		t.Errorf("embeddings: status %d", res.StatusCode)
	}
	if res := post(t, base+"/v1/completions", `{"prompt":"hi"}`); res.StatusCode != 200 {
		t.Errorf("completions: status %d", res.StatusCode)
	}
}
