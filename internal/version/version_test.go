package version

import (
	"os"
	"regexp"
	"testing"
)

// TestChangelogNamesThisVersion keeps the constant and CHANGELOG.md's newest
// release heading ("## [x.y.z] - yyyy-mm-dd") equal.
func TestChangelogNamesThisVersion(t *testing.T) {
	b, err := os.ReadFile("../../CHANGELOG.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^## \[(\d+\.\d+\.\d+[^\]]*)\] - \d{4}-\d{2}-\d{2}$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("CHANGELOG.md has no release heading like ## [0.1.0] - 2026-12-07")
	}
	if got := string(m[1]); got != Version {
		t.Errorf("CHANGELOG.md's newest release is %s, version.Version is %s", got, Version)
	}
	if !regexp.MustCompile(`(?m)^## \[Unreleased\]$`).Match(b) {
		t.Error("CHANGELOG.md has no ## [Unreleased] section")
	}
}

func TestVersionIsSemver(t *testing.T) {
	if !regexp.MustCompile(`^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`).MatchString(Version) {
		t.Errorf("Version %q is not a semantic version without the v", Version)
	}
}
