package connect

import (
	"reflect"
	"testing"

	"github.com/zapgate/caddy-zapier/zapierapi"
)

func TestHealth(t *testing.T) {
	listed := []zapierapi.Authentication{
		{ID: "1", App: slackUUID},
		{ID: "2", App: slackUUID, IsExpired: true},
		{ID: "3", App: sheetUUID}, // another app's
	}
	got := Health([]string{"1", "2", "3", "4"}, listed, slackUUID)
	want := map[string]string{"1": StatusOK, "2": StatusExpired, "3": StatusMissing, "4": StatusMissing}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Health = %v, want %v", got, want)
	}
	for _, tc := range []struct{ before, after, event string }{
		{"", StatusOK, ""}, {StatusOK, StatusOK, ""}, {StatusOK, StatusExpired, StatusExpired},
		{"", StatusExpired, StatusExpired}, {StatusExpired, StatusExpired, ""}, {StatusExpired, StatusMissing, StatusMissing},
		{StatusExpired, StatusOK, ""}, {StatusMissing, StatusMissing, ""},
	} {
		if got := Transition(tc.before, tc.after); got != tc.event {
			t.Errorf("Transition(%q, %q) = %q, want %q", tc.before, tc.after, got, tc.event)
		}
	}
}
