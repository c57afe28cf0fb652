package runcallback

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// documented is the success example of zapier-api-2026.md §2.3.
const documented = `{"data": {"type": "run", "id": "arun_abc123", "status": "success",
          "results": [ {"id": 1, "name": "row"} ], "errors": []}}`

func TestParseDeliveryAccepts(t *testing.T) {
	cases := []struct {
		name, body            string
		id, status            string
		wantResults, wantErrs string
	}{
		{"documented success", documented, "arun_abc123", "success", `[ {"id": 1, "name": "row"} ]`, `[]`},
		{"error run", `{"data":{"type":"run","id":"arun_x","status":"error","results":[],
			"errors":[{"code":"authentication","title":"Auth failed","detail":"token revoked","delay":null,"meta":{}}]}}`,
			"arun_x", "error", `[]`, `[{"code":"authentication","title":"Auth failed","detail":"token revoked","delay":null,"meta":{}}]`},
		{"arrays absent", `{"data":{"type":"run","id":"a","status":"success"}}`, "a", "success", `[]`, `[]`},
		{"arrays null", `{"data":{"type":"run","id":"a","status":"error","results":null,"errors":null}}`, "a", "error", `[]`, `[]`},
		{"unknown members tolerated", `{"data":{"type":"run","id":"a","status":"success","attempt":2},"meta":{"v":1},"links":null}`,
			"a", "success", `[]`, `[]`},
		{"whitespace everywhere", " \n{ \"data\" : { \"type\" : \"run\" , \"id\" : \"a-1_B.c~\" , \"status\" : \"success\" , \"results\" : [ 1 , 2 ] } } \n",
			"a-1_B.c~", "success", `[ 1 , 2 ]`, `[]`},
		{"id of 128 bytes", `{"data":{"type":"run","id":"` + strings.Repeat("x", 128) + `","status":"success"}}`,
			strings.Repeat("x", 128), "success", `[]`, `[]`},
		{"escaped id", `{"data":{"type":"run","id":"arun\u005f1","status":"success"}}`, "arun_1", "success", `[]`, `[]`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseDelivery([]byte(tc.body))
			if err != nil {
				t.Fatalf("ParseDelivery: %v", err)
			}
			if d.RunID != tc.id || d.Status != tc.status || string(d.Results) != tc.wantResults || string(d.Errors) != tc.wantErrs {
				t.Errorf("got %+v (results %s, errors %s)", d, d.Results, d.Errors)
			}
		})
	}
}

func TestParseDeliveryRejects(t *testing.T) {
	run := func(inner string) string { return `{"data":{` + inner + `}}` }
	const ok = `"type":"run","id":"arun_1","status":"success"`
	cases := []struct{ name, body, want string }{
		{"empty", ``, "not valid JSON"},
		{"not JSON", `hello`, "not valid JSON"},
		{"truncated", `{"data":{"type":"run"`, "not valid JSON"},
		{"top-level null", `null`, "not a JSON object"},
		{"top-level array", `[` + run(ok) + `]`, "not a JSON object"},
		{"top-level string", `"data"`, "not a JSON object"},
		{"trailing data", run(ok) + `{}`, "trailing data"},
		{"trailing garbage", run(ok) + ` x`, "trailing data"},
		{"invalid UTF-8", `{"data":{"type":"run","id":"a","status":"success","results":["` + "\xff" + `"]}}`, "UTF-8"},
		{"too large", `{"data":{` + ok + `,"results":["` + strings.Repeat("x", MaxDeliveryBytes) + `"]}}`, "larger than"},
		{"missing data", `{"run":{}}`, `missing "data"`},
		{"data null", `{"data":null}`, `missing "data"`},
		{"data array", `{"data":[]}`, `"data" is not a JSON object`},
		{"data string", `{"data":"run"}`, `"data" is not a JSON object`},
		{"duplicate data", `{"data":{` + ok + `},"data":{` + ok + `}}`, `duplicate member "data"`},
		{"duplicate id", run(ok + `,"id":"arun_2"`), `duplicate member "id"`},
		{"missing type", run(`"id":"a","status":"success"`), "missing data.type"},
		{"wrong type", run(`"type":"zap","id":"a","status":"success"`), `data.type is "zap"`},
		{"type case", run(`"type":"Run","id":"a","status":"success"`), `data.type is "Run"`},
		{"type not string", run(`"type":1,"id":"a","status":"success"`), "data.type is not a string"},
		{"missing id", run(`"type":"run","status":"success"`), "missing data.id"},
		{"id null", run(`"type":"run","id":null,"status":"success"`), "missing data.id"},
		{"empty id", run(`"type":"run","id":"","status":"success"`), "data.id is empty"},
		{"numeric id", run(`"type":"run","id":123,"status":"success"`), "data.id is not a string"},
		{"id too long", run(`"type":"run","id":"` + strings.Repeat("x", 129) + `","status":"success"`), "longer than 128"},
		{"id with slash", run(`"type":"run","id":"../admin","status":"success"`), "'/'"},
		{"id with space", run(`"type":"run","id":"a b","status":"success"`), "printable ASCII"},
		{"id with newline", run(`"type":"run","id":"a\nb","status":"success"`), "printable ASCII"},
		{"id with NUL", run(`"type":"run","id":"a\u0000","status":"success"`), "printable ASCII"},
		{"id with DEL", run(`"type":"run","id":"a\u007f","status":"success"`), "printable ASCII"},
		{"id non-ASCII", run(`"type":"run","id":"arün","status":"success"`), "printable ASCII"},
		{"missing status", run(`"type":"run","id":"a"`), "missing data.status"},
		{"pending status", run(`"type":"run","id":"a","status":"pending"`), `data.status is "pending"`},
		{"running status", run(`"type":"run","id":"a","status":"running"`), `data.status is "running"`},
		{"status case", run(`"type":"run","id":"a","status":"SUCCESS"`), `data.status is "SUCCESS"`},
		{"status not string", run(`"type":"run","id":"a","status":true`), "data.status is not a string"},
		{"results object", run(ok + `,"results":{}`), "data.results is not an array"},
		{"results string", run(ok + `,"results":"[]"`), "data.results is not an array"},
		{"results number", run(ok + `,"results":0`), "data.results is not an array"},
		{"errors object", run(ok + `,"errors":{"code":"user"}`), "data.errors is not an array"},
		{"errors false", run(ok + `,"errors":false`), "data.errors is not an array"},
		{"broken nested JSON", run(ok + `,"results":[1,]`), "not valid JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseDelivery([]byte(tc.body))
			if !errors.Is(err, ErrInvalidDelivery) {
				t.Fatalf("ParseDelivery = %+v, %v; want ErrInvalidDelivery", d, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if d.RunID != "" || d.Status != "" || d.Results != nil || d.Errors != nil {
				t.Errorf("partial result returned with error: %+v", d)
			}
		})
	}
}

func TestParseDeliveryDoesNotAliasInput(t *testing.T) {
	body := []byte(documented)
	d, err := ParseDelivery(body)
	if err != nil {
		t.Fatal(err)
	}
	want := string(d.Results)
	for i := range body {
		body[i] = ' '
	}
	if string(d.Results) != want {
		t.Error("Results shares memory with the request body")
	}
}

// FuzzParseDelivery checks that ParseDelivery never panics and that whatever
// it accepts satisfies the documented invariants and is stable under a
// re-encode.
func FuzzParseDelivery(f *testing.F) {
	f.Add([]byte(documented))
	f.Add([]byte(`{"data":{"type":"run","id":"arun_1","status":"error","results":null,"errors":[{"code":"user"}]}}`))
	f.Add([]byte(`{"data":{"type":"run","id":"a","status":"success","id":"b"}}`))
	f.Add([]byte(`{"data":[]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := ParseDelivery(body)
		if err != nil {
			if !errors.Is(err, ErrInvalidDelivery) {
				t.Fatalf("error does not wrap ErrInvalidDelivery: %v", err)
			}
			return
		}
		if checkRunID(d.RunID) != nil {
			t.Fatalf("accepted bad run id %q", d.RunID)
		}
		if d.Status != StatusSuccess && d.Status != StatusError {
			t.Fatalf("accepted status %q", d.Status)
		}
		for _, arr := range []json.RawMessage{d.Results, d.Errors} {
			var v []json.RawMessage
			if err := json.Unmarshal(arr, &v); err != nil {
				t.Fatalf("accepted non-array %q: %v", arr, err)
			}
		}
		var again bytes.Buffer
		enc := json.NewEncoder(&again)
		enc.SetEscapeHTML(false) // keep the arrays byte-comparable after Compact
		if err := enc.Encode(map[string]any{"data": map[string]any{
			"type": "run", "id": d.RunID, "status": d.Status, "results": d.Results, "errors": d.Errors,
		}}); err != nil {
			t.Fatal(err)
		}
		d2, err := ParseDelivery(again.Bytes())
		if err != nil {
			t.Fatalf("re-encoded delivery refused: %v", err)
		}
		if d2.RunID != d.RunID || d2.Status != d.Status ||
			!jsonEqual(d2.Results, d.Results) || !jsonEqual(d2.Errors, d.Errors) {
			t.Fatalf("round trip changed %+v into %+v", d, d2)
		}
	})
}

func jsonEqual(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	return json.Compact(&ca, a) == nil && json.Compact(&cb, b) == nil && bytes.Equal(ca.Bytes(), cb.Bytes())
}
