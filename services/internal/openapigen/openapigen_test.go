package openapigen_test

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	taskv1 "github.com/infergate/infergate/gen/infergate/task/v1"
	"github.com/infergate/infergate/gen/openapi"
	"github.com/infergate/infergate/services/internal/openapigen"
)

var files = []protoreflect.FileDescriptor{
	keyv1.File_infergate_key_v1_key_proto,
	deploymentv1.File_infergate_deployment_v1_deployment_proto,
	taskv1.File_infergate_task_v1_task_proto,
}

// TestDocumentCoversEveryAnnotation: every google.api.http annotation is
// an operation of the document (the committed one, gen/openapi, too),
// every $ref resolves, and the PATCH's api_keys is the JSON array of
// strings the transcoder reads, not ListValue's proto shape.
func TestDocumentCoversEveryAnnotation(t *testing.T) {
	t.Parallel()
	raw, err := openapigen.Generate(openapigen.Info{Title: "t", Version: "v"}, files, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"generated": raw, "gen/openapi": openapi.JSON} {
		var doc struct {
			OpenAPI    string                               `json:"openapi"`
			Paths      map[string]map[string]map[string]any `json:"paths"`
			Components struct {
				Schemas map[string]any `json:"schemas"`
			} `json:"components"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.HasPrefix(doc.OpenAPI, "3.") {
			t.Errorf("%s: openapi %q", name, doc.OpenAPI)
		}
		annotated := 0
		for _, f := range files {
			for i := range f.Services().Len() {
				ms := f.Services().Get(i).Methods()
				for j := range ms.Len() {
					rule, _ := proto.GetExtension(ms.Get(j).Options(), annotations.E_Http).(*annotations.HttpRule)
					if rule == nil {
						continue
					}
					annotated++
					op := "operationId " + string(f.Services().Get(i).Name()) + "_" + string(ms.Get(j).Name())
					if !strings.Contains(string(data), `"operationId": "`+strings.TrimPrefix(op, "operationId ")+`"`) {
						t.Errorf("%s: no %s", name, op)
					}
				}
			}
		}
		if annotated < 10 {
			t.Errorf("only %d annotated methods found", annotated)
		}
		for _, ref := range refs(data) {
			if doc.Components.Schemas[strings.TrimPrefix(ref, "#/components/schemas/")] == nil && !strings.HasPrefix(ref, "#/components/responses/") {
				t.Errorf("%s: $ref %s does not resolve", name, ref)
			}
		}
		patch := doc.Paths["/cloud/v3/inference/{project}/deployments/{name}"]["patch"]
		body, _ := json.Marshal(patch["requestBody"])
		var rb struct {
			Content map[string]struct {
				Schema struct {
					Properties map[string]struct {
						Type  string `json:"type"`
						Items struct {
							Type string `json:"type"`
						} `json:"items"`
					} `json:"properties"`
				} `json:"schema"`
			} `json:"content"`
		}
		_ = json.Unmarshal(body, &rb)
		if k := rb.Content["application/json"].Schema.Properties["api_keys"]; k.Type != "array" || k.Items.Type != "string" {
			t.Errorf("%s: PATCH deployments body %s: want api_keys as an array of strings", name, body)
		}
	}
}

func refs(data []byte) []string {
	var out []string
	for _, part := range strings.Split(string(data), `"$ref": "`)[1:] {
		out = append(out, part[:strings.Index(part, `"`)])
	}
	return out
}
