package caddymodule

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// configurationDoc is the one page that documents every option.
const configurationDoc = "../docs/configuration.md"

// docSections maps each module to the heading of its section in
// configurationDoc; a module of ours missing here fails the test.
var docSections = map[string]string{
	"zapier":                        "zapier",
	"http.handlers.zapier_auth":     "zapier_auth",
	"http.handlers.zapier_jwks":     "zapier_jwks",
	"http.handlers.zapier_connect":  "zapier_connect",
	"http.handlers.zapier_actions":  "zapier_actions",
	"http.handlers.zapier_mcp":      "zapier_mcp",
	"http.handlers.zapier_triggers": "zapier_triggers",
	"http.handlers.zapier_openapi":  "zapier_openapi",
}

// caddyfileParsers maps each function that reads Caddyfile options (by
// receiver type or function name) to the module whose section documents
// them.
var caddyfileParsers = map[string]string{
	"App":             "zapier",
	"ExchangeConfig":  "zapier",
	"IdentityConfig":  "zapier",
	"CacheConfig":     "zapier",
	"RateLimitConfig": "zapier",
	"parseAPIBudget":  "zapier",

	"parseClaims":         "zapier",
	"parseBillingClaim":   "zapier",
	"parseRateLimitClaim": "zapier",

	"parseUsage":      "zapier",
	"parseQuota":      "zapier",
	"Auth":            "http.handlers.zapier_auth",
	"JWKS":            "http.handlers.zapier_jwks",
	"Connect":         "http.handlers.zapier_connect",
	"parseAppMapping": "http.handlers.zapier_connect",
	"Actions":         "http.handlers.zapier_actions",
	"MCP":             "http.handlers.zapier_mcp",
	"policyLine":      "http.handlers.zapier_mcp",
	"Triggers":        "http.handlers.zapier_triggers",
	"OpenAPI":         "http.handlers.zapier_openapi",
}

// TestEveryOptionIsDocumented fails when a Caddyfile subdirective or a JSON
// field of one of our modules has no row in docs/configuration.md: the first
// cell of a table row in the module's section must name it in backticks.
func TestEveryOptionIsDocumented(t *testing.T) {
	doc, err := os.ReadFile(configurationDoc)
	if err != nil {
		t.Fatal(err)
	}
	documented := documentedOptions(string(doc))

	for _, id := range caddy.Modules() {
		if !strings.Contains(id, "zapier") || strings.HasPrefix(id, "admin.api.") {
			continue
		}
		mod, err := caddy.GetModule(id)
		if err != nil {
			t.Fatal(err)
		}
		section, ok := docSections[id]
		if !ok {
			t.Errorf("module %s has no section in %s: add it to docSections", id, configurationDoc)
			continue
		}
		if documented[section] == nil {
			t.Errorf("%s has no section headed `%s`", configurationDoc, section)
			continue
		}
		for _, name := range jsonOptions(reflect.TypeOf(mod.New())) {
			if !documented[section][name] {
				t.Errorf("JSON option %q of %s is not documented in %s (section `%s`)", name, id, configurationDoc, section)
			}
		}
	}
	for name, module := range caddyfileOptions(t) {
		section := docSections[module.module]
		if !documented[section][module.option] {
			t.Errorf("Caddyfile option %q (read by %s) is not documented in %s (section `%s`)", module.option, name, configurationDoc, section)
		}
	}
}

// documentedOptions returns, per section (a `## ` heading's first backticked
// word), the names in backticks in the first cell of its table rows; a
// dotted name (`cache.size`) also documents its last part.
func documentedOptions(doc string) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	heading := regexp.MustCompile("^## `([a-z_]+)`")
	code := regexp.MustCompile("`([^`]+)`")
	var current map[string]bool
	for _, line := range strings.Split(doc, "\n") {
		if m := heading.FindStringSubmatch(line); m != nil {
			current = map[string]bool{}
			out[m[1]] = current
			continue
		}
		if current == nil || !strings.HasPrefix(line, "| ") {
			continue
		}
		cell := strings.SplitN(line[2:], " |", 2)[0]
		for _, m := range code.FindAllStringSubmatch(cell, -1) {
			for _, word := range strings.Fields(m[1]) {
				current[word] = true
				parts := strings.Split(word, ".")
				for i := range parts {
					current[strings.Join(parts[i:], ".")] = true
				}
			}
		}
	}
	return out
}

// jsonOptions lists the dotted JSON paths of a module's config fields.
func jsonOptions(t reflect.Type) []string {
	var out []string
	var walk func(t reflect.Type, prefix string, depth int)
	walk = func(t reflect.Type, prefix string, depth int) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || depth > 4 {
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("json"), ",")[0]
			if !f.IsExported() || tag == "" || tag == "-" {
				continue
			}
			name := prefix + tag
			out = append(out, name)
			ft := f.Type
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice || ft.Kind() == reflect.Map {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft.PkgPath() == t.PkgPath() {
				walk(ft, name+".", depth+1)
			}
		}
	}
	walk(t, "", 0)
	sort.Strings(out)
	return out
}

type caddyfileOption struct{ module, option string }

// caddyfileOptions finds the subdirective names the Caddyfile parsers of
// this package accept: the string cases of their switches.
func caddyfileOptions(t *testing.T) map[string]caddyfileOption {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]caddyfileOption{}
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || !takesDispenser(fn) {
				continue
			}
			owner := fn.Name.Name
			if fn.Recv != nil {
				owner = receiverName(fn.Recv.List[0].Type)
			}
			var names []string
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				if cc, ok := n.(*ast.CaseClause); ok {
					for _, e := range cc.List {
						if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
							s, _ := strconv.Unquote(lit.Value)
							names = append(names, s)
						}
					}
				}
				return true
			})
			if len(names) == 0 {
				continue
			}
			module, ok := caddyfileParsers[owner]
			if !ok {
				t.Errorf("%s (%s) reads Caddyfile options: map it to its module in caddyfileParsers", owner, file)
				continue
			}
			for _, name := range names {
				out[owner+" "+name] = caddyfileOption{module, name}
			}
		}
	}
	return out
}

func takesDispenser(fn *ast.FuncDecl) bool {
	for _, p := range fn.Type.Params.List {
		if star, ok := p.Type.(*ast.StarExpr); ok {
			if sel, ok := star.X.(*ast.SelectorExpr); ok && sel.Sel.Name == "Dispenser" {
				return true
			}
		}
	}
	return false
}

func receiverName(e ast.Expr) string {
	if star, ok := e.(*ast.StarExpr); ok {
		e = star.X
	}
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}
