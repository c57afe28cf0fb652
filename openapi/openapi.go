// Package openapi holds the OpenAPI 3.1 document of the gateway's own
// routes (openapi.yaml, embedded) and renders it as YAML or JSON, optionally
// with the server URL a deployment is reached at. It imports no Caddy: the
// zapier_openapi handler serves what it renders, and the integration tests
// validate their traffic against the same bytes.
package openapi

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"

	"go.yaml.in/yaml/v3"
)

//go:embed openapi.yaml
var document []byte

// YAML returns the document as written in the repository.
func YAML() []byte { return document }

// Rendered is the document in both encodings.
type Rendered struct {
	YAML []byte
	JSON []byte
}

// Render returns the document as YAML and JSON. A non-empty serverURL
// replaces the document's top-level servers with that one URL (the admin
// API's path items keep their own), so clients generated from a served
// document point at the gateway that served it.
func Render(serverURL string) (Rendered, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(document, &root); err != nil {
		return Rendered{}, fmt.Errorf("parsing openapi.yaml: %w", err)
	}
	if len(root.Content) != 1 || root.Content[0].Kind != yaml.MappingNode {
		return Rendered{}, errors.New("openapi.yaml is not a mapping")
	}
	out := Rendered{YAML: document}
	if serverURL != "" {
		setServers(root.Content[0], serverURL)
		b, err := yaml.Marshal(&root)
		if err != nil {
			return Rendered{}, err
		}
		out.YAML = b
	}
	var tree any
	if err := root.Decode(&tree); err != nil {
		return Rendered{}, fmt.Errorf("decoding openapi.yaml: %w", err)
	}
	b, err := json.MarshalIndent(tree, "", "  ")
	if err != nil {
		return Rendered{}, fmt.Errorf("openapi.yaml has no JSON form: %w", err)
	}
	out.JSON = append(b, '\n')
	return out, nil
}

// setServers replaces (or adds) the mapping's servers key.
func setServers(m *yaml.Node, url string) {
	servers := &yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{{
		Kind: yaml.MappingNode,
		Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Value: "url"},
			{Kind: yaml.ScalarNode, Value: url},
		},
	}}}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "servers" {
			m.Content[i+1] = servers
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "servers"}, servers)
}
