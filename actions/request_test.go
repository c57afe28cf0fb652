package actions

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestActionRequestCheck(t *testing.T) {
	ok := []string{
		`{"app":"a","action":"send"}`,
		`{"app":"a","action":"send","action_type":"WRITE","inputs":{"x":1}}`,
		`{"app":"a","action":"send","inputs":null,"connection_id":"c-1"}`,
		`{"app":"a","action":"send","connection_id":42}`,
	}
	for _, body := range ok {
		var req RunRequest
		if err := json.Unmarshal([]byte(body), &req); err != nil {
			t.Fatal(err)
		}
		if err := req.Check(); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
	for body, want := range map[string]string{
		`{"app":"a"}`: "action must be the action's key (1-256 bytes)",
		`{"app":"a","action":"` + strings.Repeat("k", MaxActionKeyLen+1) + `"}`: "action must be the action's key (1-256 bytes)",
		`{"app":"a","action":"s","action_type":"nope"}`:                         "action_type must be one of ",
		`{"app":"a","action":"s","inputs":[1]}`:                                 "inputs must be a JSON object keyed by input field id",
		`{"app":"a","action":"s","connection_id":{}}`:                           "connection_id must be one of the user's connection ids (a string or an integer)",
	} {
		var req ActionRequest
		if err := json.Unmarshal([]byte(body), &req); err != nil {
			t.Fatal(err)
		}
		err := req.Check()
		var rerr *RequestError
		if !errors.As(err, &rerr) || !strings.HasPrefix(rerr.Message, want) {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
}

func TestRequestConnection(t *testing.T) {
	for raw, want := range map[string]string{``: "", `"c-1"`: "c-1", `42`: "42"} {
		req := ActionRequest{ConnectionID: json.RawMessage(raw)}
		if got := req.Connection(); got != want {
			t.Errorf("Connection(%s) = %q, want %q", raw, got, want)
		}
	}
	var req RunRequest
	if err := json.Unmarshal([]byte(`{"app":"a","action":"s","connection_id":7,"wait":"5s"}`), &req); err != nil ||
		req.App != "a" || req.Connection() != "7" || string(req.Wait) != `"5s"` {
		t.Errorf("decoded %+v %v", req, err)
	}
}

func TestIsJSONObjectOrNull(t *testing.T) {
	for raw, want := range map[string]bool{``: true, `null`: true, ` {"a":1}`: true, `{}`: true, `[]`: false, `1`: false, `"x"`: false} {
		if got := IsJSONObjectOrNull(json.RawMessage(raw)); got != want {
			t.Errorf("IsJSONObjectOrNull(%s) = %v", raw, got)
		}
	}
}

func TestParseWait(t *testing.T) {
	for raw, want := range map[string]time.Duration{
		``: DefaultRunWait, `null`: DefaultRunWait, `"45s"`: 45 * time.Second, `"2m"`: 2 * time.Minute,
		`0`: 0, `"0s"`: 0, `1.5`: 1500 * time.Millisecond, `120`: MaxRunWait,
	} {
		if got, err := ParseWait(json.RawMessage(raw), time.ParseDuration); err != nil || got != want {
			t.Errorf("ParseWait(%s) = %s, %v; want %s", raw, got, err, want)
		}
	}
	for raw, want := range map[string]string{
		`"121s"`: "wait must be between 0s and 2m0s", `121`: "wait must be between 0s and 2m0s",
		`-1`: "wait must be between 0s and 2m0s", `"-1s"`: "wait must be between 0s and 2m0s", `1e300`: "wait must be between 0s and 2m0s",
		`"soon"`: `wait must be a duration such as "30s", or a number of seconds`,
		`true`:   `wait must be a duration such as "30s", or a number of seconds`,
		`{}`:     `wait must be a duration such as "30s", or a number of seconds`,
	} {
		_, err := ParseWait(json.RawMessage(raw), time.ParseDuration)
		var rerr *RequestError
		if !errors.As(err, &rerr) || rerr.Message != want {
			t.Errorf("ParseWait(%s) = %v, want %q", raw, err, want)
		}
	}
	// The duration parser is the caller's.
	days := func(string) (time.Duration, error) { return 90 * time.Second, nil }
	if got, err := ParseWait(json.RawMessage(`"0.001d"`), days); err != nil || got != 90*time.Second {
		t.Errorf("custom parser: %s %v", got, err)
	}
}

func FuzzParseWait(f *testing.F) {
	for _, s := range []string{`"30s"`, `30`, `0.05`, `"0s"`, `null`, `-1`, `1e308`, `"-5s"`, `NaN`, `"9223372036s"`, `120.0000001`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := ParseWait(raw, time.ParseDuration)
		if err != nil {
			var rerr *RequestError
			if !errors.As(err, &rerr) {
				t.Fatalf("error %T %v", err, err)
			}
			return
		}
		if d < 0 || d > MaxRunWait {
			t.Fatalf("accepted wait %v", d)
		}
	})
}
