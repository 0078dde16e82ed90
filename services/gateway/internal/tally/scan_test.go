package tally

import (
	"strings"
	"testing"
)

func TestScanner(t *testing.T) {
	t.Parallel()
	sse := "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"usage\"}}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"say \\\"usage\\\": {\\\"prompt_tokens\\\": 99}\"}}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,\"total_tokens\":46}}\n\n" +
		"data: [DONE]\n\n"
	cases := []struct {
		name             string
		body             string
		prompt, complete uint64
		ok               bool
	}{
		{"json completion", `{"id":"x","object":"chat.completion","choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}`, 7, 3, true},
		{"nested details ignored", `{"usage": {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4, "prompt_tokens": 1000}, "completion_tokens": 8, "completion_tokens_details": {"reasoning_tokens": 2}}}`, 5, 8, true},
		{"responses api names", `{"usage":{"input_tokens":11,"output_tokens":22,"total_tokens":33}}`, 11, 22, true},
		{"sse final chunk", sse, 12, 34, true},
		{"no usage", `{"data":[{"embedding":[0.1,0.2]}]}`, 0, 0, false},
		{"usage null", `{"usage":null}`, 0, 0, false},
		{"usage as a value", `{"object":"usage","x":{"prompt_tokens":3}}`, 0, 0, false},
		{"not json", "\x00\x01 usage \"usage\" : [1,2,3]", 0, 0, false},
		{"embeddings", `{"object":"list","data":[],"model":"m","usage":{"prompt_tokens":8,"total_tokens":8}}`, 8, 0, true},
	}
	for _, c := range cases {
		for _, step := range []int{len(c.body) + 1, 1, 2, 3, 7} {
			var s Scanner
			for b := c.body; len(b) > 0; {
				k := min(step, len(b))
				_, _ = s.Write([]byte(b[:k]))
				b = b[k:]
			}
			p, q, ok := s.Usage()
			if p != c.prompt || q != c.complete || ok != c.ok {
				t.Errorf("%s (pieces of %d): got %d, %d, %v; want %d, %d, %v", c.name, step, p, q, ok, c.prompt, c.complete, c.ok)
			}
		}
	}
}

func TestScannerDeepNestingIsBounded(t *testing.T) {
	t.Parallel()
	var s Scanner
	_, _ = s.Write([]byte(`{"usage":{"a":` + strings.Repeat("[", 10000) + `1` + strings.Repeat("]", 10000) + `},"usage":{"prompt_tokens":1,"completion_tokens":2}}`))
	if p, q, ok := s.Usage(); !ok || p != 1 || q != 2 {
		t.Errorf("got %d, %d, %v", p, q, ok)
	}
}
