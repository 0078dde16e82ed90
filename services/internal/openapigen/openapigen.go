// Package openapigen writes the OpenAPI 3 document of the control plane's
// REST surface from the proto files' google.api.http annotations — the
// same annotations the transcoder (vanguard) serves — so the document and
// the routes cannot drift apart. It runs as a protoc plugin
// (protoc-gen-infergate-openapi) under `make gen`; the JSON it writes is
// embedded in gen/openapi and served at /openapi.json.
//
// JSON names are the proto field names (snake_case), as the transcoder
// marshals them; well-known types are described by their JSON mapping.
package openapigen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ErrorSchema is the name of the one error shape every REST failure has.
const ErrorSchema = "Error"

// Info describes the document.
type Info struct {
	Title, Version, Description string
}

// Comments returns the leading comment of a descriptor, or "".
type Comments func(protoreflect.Descriptor) string

// Generate returns the OpenAPI 3 document, as indented JSON, of every
// annotated method of the services in files.
func Generate(info Info, files []protoreflect.FileDescriptor, comments Comments) ([]byte, error) {
	g := &generator{comments: comments, schemas: map[string]any{}, paths: map[string]map[string]any{}}
	for _, f := range files {
		svcs := f.Services()
		for i := range svcs.Len() {
			if err := g.service(svcs.Get(i)); err != nil {
				return nil, err
			}
		}
	}
	g.schemas[ErrorSchema] = map[string]any{
		"type":        "object",
		"description": "Every REST failure: the gRPC status code (3 invalid argument, 5 not found, 6 already exists, 7 permission denied, 10 aborted, 16 unauthenticated, …), a message naming the field or resource, and details (empty unless stated). Never a stack trace.",
		"properties": map[string]any{
			"code":    map[string]any{"type": "integer", "format": "int32", "description": "The gRPC status code."},
			"message": map[string]any{"type": "string", "description": "What went wrong, for a person."},
			"details": map[string]any{"type": "array", "items": map[string]any{"type": "object"}},
		},
		"required": []string{"code", "message"},
	}
	doc := map[string]any{
		"openapi": "3.0.3",
		"info":    map[string]any{"title": info.Title, "version": info.Version, "description": info.Description},
		"paths":   g.paths,
		"components": map[string]any{
			"schemas": g.schemas,
			"securitySchemes": map[string]any{
				"bearer": map[string]any{"type": "http", "scheme": "bearer", "description": "An admin token: Authorization: Bearer <token>."},
				"apikey": map[string]any{"type": "apiKey", "in": "header", "name": "Authorization", "description": "The platform's form: Authorization: APIKey <admin token>."},
			},
			"responses": map[string]any{
				"Error": map[string]any{
					"description": "An error: 400 invalid argument, 401 no or unknown admin token, 403 project outside the token's scope, 404 not found, 409 already exists or a conflict, 429 body over 1 MiB (resource exhausted), 503 unavailable.",
					"content":     map[string]any{"application/json": map[string]any{"schema": ref(ErrorSchema)}},
				},
			},
		},
		"security": []any{map[string]any{"bearer": []string{}}, map[string]any{"apikey": []string{}}},
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type generator struct {
	comments Comments
	schemas  map[string]any
	paths    map[string]map[string]any
}

func ref(name string) map[string]any {
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

// variable matches a path template's variable: {name} or {name=pattern}.
var variable = regexp.MustCompile(`\{([a-z_][a-z0-9_.]*)(=[^}]*)?\}`)

func (g *generator) service(s protoreflect.ServiceDescriptor) error {
	methods := s.Methods()
	for i := range methods.Len() {
		m := methods.Get(i)
		rule, ok := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
		if !ok || rule == nil {
			continue
		}
		for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
			if err := g.operation(s, m, r); err != nil {
				return fmt.Errorf("%s: %w", m.FullName(), err)
			}
		}
	}
	return nil
}

func (g *generator) operation(s protoreflect.ServiceDescriptor, m protoreflect.MethodDescriptor, r *annotations.HttpRule) error {
	var verb, tmpl string
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		verb, tmpl = "get", p.Get
	case *annotations.HttpRule_Post:
		verb, tmpl = "post", p.Post
	case *annotations.HttpRule_Put:
		verb, tmpl = "put", p.Put
	case *annotations.HttpRule_Patch:
		verb, tmpl = "patch", p.Patch
	case *annotations.HttpRule_Delete:
		verb, tmpl = "delete", p.Delete
	default:
		return fmt.Errorf("unsupported http rule pattern %T", p)
	}
	in := m.Input()
	pathFields := map[string]bool{}
	var params []any
	path := variable.ReplaceAllStringFunc(tmpl, func(v string) string {
		name := variable.FindStringSubmatch(v)[1]
		pathFields[name] = true
		return "{" + name + "}"
	})
	for name := range pathFields {
		f := in.Fields().ByName(protoreflect.Name(name))
		if f == nil {
			return fmt.Errorf("path variable %q is not a field of %s", name, in.FullName())
		}
	}
	fields := in.Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		if pathFields[string(f.Name())] {
			params = append(params, map[string]any{
				"name": string(f.Name()), "in": "path", "required": true,
				"description": g.comment(f), "schema": map[string]any{"type": "string"},
			})
		}
	}
	op := map[string]any{
		"operationId": string(s.Name()) + "_" + string(m.Name()),
		"tags":        []string{string(s.Name())},
		"description": g.comment(m),
		"responses":   errorResponses(),
	}
	switch body := r.GetBody(); body {
	case "":
		// Every other field is a query parameter.
		for i := range fields.Len() {
			f := fields.Get(i)
			if pathFields[string(f.Name())] || f.IsList() && f.Message() != nil {
				continue
			}
			schema := g.fieldSchema(f)
			params = append(params, map[string]any{
				"name": string(f.Name()), "in": "query", "description": g.comment(f), "schema": schema,
			})
		}
	case "*":
		op["requestBody"] = map[string]any{
			"required": true,
			"content":  map[string]any{"application/json": map[string]any{"schema": g.object(in, pathFields)}},
		}
	default:
		f := fields.ByName(protoreflect.Name(body))
		if f == nil {
			return fmt.Errorf("body %q is not a field of %s", body, in.FullName())
		}
		op["requestBody"] = map[string]any{
			"required": true,
			"content":  map[string]any{"application/json": map[string]any{"schema": g.fieldSchema(f)}},
		}
	}
	if len(params) > 0 {
		op["parameters"] = params
	}
	out := map[string]any{"schema": g.messageSchema(m.Output())}
	if rb := r.GetResponseBody(); rb != "" {
		f := m.Output().Fields().ByName(protoreflect.Name(rb))
		if f == nil {
			return fmt.Errorf("response_body %q is not a field of %s", rb, m.Output().FullName())
		}
		out["schema"] = g.fieldSchema(f)
	}
	op["responses"].(map[string]any)["200"] = map[string]any{
		"description": "OK",
		"content":     map[string]any{"application/json": out},
	}
	if g.paths[path] == nil {
		g.paths[path] = map[string]any{}
	}
	if _, dup := g.paths[path][verb]; dup {
		return fmt.Errorf("%s %s is bound twice", strings.ToUpper(verb), path)
	}
	g.paths[path][verb] = op
	return nil
}

// errorResponses are an operation's failures: each status the REST
// surface answers with, all in the one error shape.
func errorResponses() map[string]any {
	out := map[string]any{}
	for _, status := range []string{"400", "401", "403", "404", "409", "default"} {
		out[status] = map[string]any{"$ref": "#/components/responses/Error"}
	}
	return out
}

func (g *generator) comment(d protoreflect.Descriptor) string {
	if g.comments == nil {
		return ""
	}
	return strings.TrimSpace(g.comments(d))
}

// object is a message's schema inline, without the given fields (those
// bound to the path).
func (g *generator) object(m protoreflect.MessageDescriptor, without map[string]bool) map[string]any {
	props := map[string]any{}
	fields := m.Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		if without[string(f.Name())] {
			continue
		}
		props[string(f.Name())] = g.fieldSchema(f)
	}
	out := map[string]any{"type": "object", "properties": props}
	if d := g.comment(m); d != "" {
		out["description"] = d
	}
	return out
}

// messageSchema is a reference to the message's schema, which it adds to
// the components once; well-known types are their JSON mapping inline.
func (g *generator) messageSchema(m protoreflect.MessageDescriptor) map[string]any {
	switch m.FullName() {
	case "google.protobuf.Timestamp":
		return map[string]any{"type": "string", "format": "date-time"}
	case "google.protobuf.Duration":
		return map[string]any{"type": "string", "description": "Seconds with an s suffix, e.g. \"1.5s\".", "example": "2s"}
	case "google.protobuf.ListValue":
		return map[string]any{"type": "array", "items": map[string]any{"type": "string"}}
	case "google.protobuf.Struct":
		return map[string]any{"type": "object", "additionalProperties": true}
	case "google.protobuf.Value":
		return map[string]any{}
	case "google.protobuf.Empty":
		return map[string]any{"type": "object"}
	}
	name := string(m.FullName())
	if _, ok := g.schemas[name]; !ok {
		g.schemas[name] = nil // placeholder: recursion stops here
		g.schemas[name] = g.object(m, nil)
	}
	return ref(name)
}

func (g *generator) fieldSchema(f protoreflect.FieldDescriptor) map[string]any {
	if f.IsMap() {
		return map[string]any{"type": "object", "additionalProperties": g.singular(f.MapValue())}
	}
	s := g.singular(f)
	if f.IsList() {
		s = map[string]any{"type": "array", "items": s}
	}
	if d := g.comment(f); d != "" {
		if _, isRef := s["$ref"]; isRef {
			// A $ref ignores its siblings in OpenAPI 3.0: wrap it.
			s = map[string]any{"allOf": []any{s}}
		}
		s = cloneWith(s, "description", d)
	}
	return s
}

func cloneWith(m map[string]any, k string, v any) map[string]any {
	out := make(map[string]any, len(m)+1)
	for key, val := range m {
		out[key] = val
	}
	out[k] = v
	return out
}

func (g *generator) singular(f protoreflect.FieldDescriptor) map[string]any {
	switch f.Kind() {
	case protoreflect.BoolKind:
		return map[string]any{"type": "boolean"}
	case protoreflect.StringKind:
		return map[string]any{"type": "string"}
	case protoreflect.BytesKind:
		return map[string]any{"type": "string", "format": "byte"}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return map[string]any{"type": "integer", "format": "int32"}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return map[string]any{"type": "integer", "format": "int64", "minimum": 0}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return map[string]any{"type": "string", "format": "int64"}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return map[string]any{"type": "string", "format": "uint64"}
	case protoreflect.FloatKind:
		return map[string]any{"type": "number", "format": "float"}
	case protoreflect.DoubleKind:
		return map[string]any{"type": "number", "format": "double"}
	case protoreflect.EnumKind:
		var names []string
		vals := f.Enum().Values()
		for i := range vals.Len() {
			names = append(names, string(vals.Get(i).Name()))
		}
		slices.Sort(names)
		return map[string]any{"type": "string", "enum": names}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return g.messageSchema(f.Message())
	}
	return map[string]any{}
}
