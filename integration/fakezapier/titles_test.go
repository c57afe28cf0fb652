package fakezapier

import "testing"

func TestAccountTitle(t *testing.T) {
	for _, c := range []struct{ tenant, user, want string }{
		{"Acme", "alice", "alice@acme.example"},
		{"org_acme", "alice", "alice@acme.example"},
		{"org_456", "user_123", "user-123@456.example"},
		{"org_", "u", "u@org.example"},
		{"Org 1", "Bob.Smith", "bob.smith@1.example"},
		{"81f613aa-c98a-4383-a5fc-195e68647217", "u", "u@81f613aa-c98a-4383-a5fc-195e68647217.example"},
		{"", "ßß", "user@user.example"},
	} {
		if got := AccountTitle(c.tenant, c.user); got != c.want {
			t.Errorf("AccountTitle(%q, %q) = %q, want %q", c.tenant, c.user, got, c.want)
		}
	}
}
