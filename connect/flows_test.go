package connect

import (
	"context"
	"errors"
	"testing"
)

const (
	slackUUID = "81f613aa-c98a-4383-a5fc-195e68647217"
	sheetUUID = "5f3e2d1c-0b9a-4876-8543-21fedcba9876"
)

func TestServiceNames(t *testing.T) {
	for _, tc := range []struct {
		service, app string
		want         bool
	}{
		{"", "SlackCLIAPI", true},
		{"SlackCLIAPI", "SlackCLIAPI", true},
		{"SlackCLIAPI@1.0.0", "SlackCLIAPI", true},
		{"SlackCLIAPI@latest", "SlackCLIAPI", true},
		{"GoogleSheetsV2API", "SlackCLIAPI", false},
		{"slackcliapi", "SlackCLIAPI", false},
		{"SlackCLIAPIx", "SlackCLIAPI", false},
		{"AnyApp", sheetUUID, true}, // no key known: the server-side lookup decides
	} {
		if got := ServiceNames(tc.service, tc.app); got != tc.want {
			t.Errorf("ServiceNames(%q, %q) = %v, want %v", tc.service, tc.app, got, tc.want)
		}
	}
}

func TestCandidatesAreNewestFirstAndNarrowedByService(t *testing.T) {
	flows := []PendingFlow{
		{ID: "a", App: "SlackCLIAPI", AppUUID: slackUUID},
		{ID: "b", App: "GoogleSheetsV2API", AppUUID: sheetUUID},
		{ID: "c", App: "SlackCLIAPI", AppUUID: slackUUID},
	}
	ids := func(fs []PendingFlow) (out string) {
		for _, f := range fs {
			out += f.ID
		}
		return out
	}
	for service, want := range map[string]string{"": "cba", "SlackCLIAPI": "ca", "GoogleSheetsV2API@2.1.0": "b", "Other": ""} {
		if got := ids(Candidates(flows, service)); got != want {
			t.Errorf("Candidates(%q) = %q, want %q", service, got, want)
		}
	}
}

func TestChoose(t *testing.T) {
	ctx := context.Background()
	slackOld := PendingFlow{ID: "a", App: "SlackCLIAPI", AppUUID: slackUUID}
	sheet := PendingFlow{ID: "b", App: "GoogleSheetsV2API", AppUUID: sheetUUID}
	slackNew := PendingFlow{ID: "c", App: "SlackCLIAPI", AppUUID: slackUUID}
	newestFirst := []PendingFlow{slackNew, sheet, slackOld}

	var asked []string
	ownedBy := func(owner string) func(context.Context, string) (bool, error) {
		return func(_ context.Context, app string) (bool, error) {
			asked = append(asked, app)
			return app == owner, nil
		}
	}
	for name, tc := range map[string]struct {
		candidates []PendingFlow
		owner      string
		want       string
		asks       int
	}{
		"none":                  {nil, slackUUID, "", 0},
		"one, never asked":      {[]PendingFlow{sheet}, slackUUID, "b", 0},
		"the sheet's id":        {newestFirst, sheetUUID, "b", 2},
		"slack's id: newest":    {newestFirst, slackUUID, "c", 1},
		"nobody's id: newest":   {newestFirst, "", "c", 2}, // each app asked once
		"same app twice: first": {[]PendingFlow{slackNew, slackOld}, "", "c", 1},
	} {
		asked = nil
		got, ok, err := Choose(ctx, tc.candidates, ownedBy(tc.owner))
		if err != nil || ok != (tc.want != "") || got.ID != tc.want || len(asked) != tc.asks {
			t.Errorf("%s: Choose = %+v %v %v after %d lookups, want %q after %d", name, got, ok, err, len(asked), tc.want, tc.asks)
		}
	}
	boom := errors.New("zapier down")
	if _, _, err := Choose(ctx, newestFirst, func(context.Context, string) (bool, error) { return false, boom }); !errors.Is(err, boom) {
		t.Errorf("a failed lookup: %v", err)
	}
}
