package openapi

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// load parses and validates a rendering with kin-openapi, the validator
// the integration tests use.
func load(t *testing.T, data []byte) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(data)
	if err != nil {
		t.Fatalf("loading: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("validating: %v", err)
	}
	return doc
}

func TestDocumentIsValidOpenAPI31(t *testing.T) {
	r, err := Render("")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"yaml": r.YAML, "json": r.JSON} {
		doc := load(t, data)
		if !doc.IsOpenAPI31OrLater() || doc.OpenAPI != "3.1.0" {
			t.Errorf("%s: openapi %q, want 3.1.0", name, doc.OpenAPI)
		}
		if doc.Paths.Len() < 30 {
			t.Errorf("%s: %d paths", name, doc.Paths.Len())
		}
	}
	if !bytes.Equal(r.YAML, YAML()) {
		t.Error("without a server URL the YAML is not the file as written")
	}
}

func TestEveryOperationHasAnIDATagAndNoDefaultOnlyResponses(t *testing.T) {
	doc := load(t, YAML())
	ids := map[string]string{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			where := method + " " + path
			if op.OperationID == "" || len(op.Tags) != 1 {
				t.Errorf("%s: operationId %q, tags %v", where, op.OperationID, op.Tags)
			}
			if other, dup := ids[op.OperationID]; dup {
				t.Errorf("%s and %s share operationId %s", where, other, op.OperationID)
			}
			ids[op.OperationID] = where
			if op.Responses.Len() == 0 || (op.Responses.Len() == 1 && op.Responses.Default() != nil) {
				t.Errorf("%s: no documented status", where)
			}
		}
	}
}

func TestRenderWithServerURL(t *testing.T) {
	r, err := Render("https://app.example.com")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"yaml": r.YAML, "json": r.JSON} {
		doc := load(t, data)
		if len(doc.Servers) != 1 || doc.Servers[0].URL != "https://app.example.com" {
			t.Errorf("%s: servers %+v", name, doc.Servers)
		}
		if s := doc.Paths.Find("/zapier/status").Servers; len(s) != 1 || s[0].URL != "http://localhost:2019" {
			t.Errorf("%s: the admin path lost its own server: %+v", name, s)
		}
	}
	var tree map[string]any
	if err := json.Unmarshal(r.JSON, &tree); err != nil {
		t.Fatal(err)
	}
	if tree["openapi"] != "3.1.0" {
		t.Errorf("JSON openapi = %v", tree["openapi"])
	}
}

// Client generators lag behind OpenAPI 3.1: oapi-codegen v2.8.2 refuses a
// `type` with several entries. The document says the same with oneOf/anyOf,
// so a client can be generated from it (docs/_incoming/openapi.md).
func TestNoTypeArrays(t *testing.T) {
	if m := regexp.MustCompile(`(?m)^.*\btype: \[.*$`).FindAll(YAML(), -1); len(m) > 0 {
		t.Errorf("type arrays (write oneOf/anyOf instead): %s", bytes.Join(m, []byte("\n")))
	}
}
