package config

import (
	"strings"
	"testing"
)

func TestRedactMasksURLPasswords(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"http://kuryr:s3cret@keystone:5000/v3", "http://kuryr:***@keystone:5000/v3"},
		{"https://kuryr:s3cret@keystone/v3?x=1#f", "https://kuryr:***@keystone/v3?x=1#f"},
		{"http://kuryr@keystone/v3", "http://kuryr@keystone/v3"},
		{"http://keystone:5000/v3", "http://keystone:5000/v3"},
		{"http://keystone:5000/v3/a@b", "http://keystone:5000/v3/a@b"},
		// Not valid URLs, as in an error message: the password is masked all the same.
		{"http://kuryr:s3 cret@keystone/v3", "http://kuryr:***@keystone/v3"},
		{"http://kuryr:s3/cret@keystone/v3", "http://kuryr:***@keystone/v3"},
		{"kuryr", "kuryr"},
		{"", ""},
	} {
		if got := redact(nil, tc.in); got != tc.want {
			t.Errorf("redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := redact(lookup(secNeutron, "password"), "http://plain"); got != "***" {
		t.Errorf("a secret option shows as %q", got)
	}
}

// The auth_url's password shows neither in --validate-config's JSON nor in an error naming it.
func TestURLPasswordsNeverShown(t *testing.T) {
	c, err := Parse([]byte("[neutron]\nauth_url = http://kuryr:s3cret@keystone/v3\n"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.RedactedJSON()
	if err != nil || strings.Contains(string(out), "s3cret") || !strings.Contains(string(out), `"http://kuryr:***@keystone/v3"`) {
		t.Errorf("RedactedJSON: %v\n%s", err, out)
	}
	for _, conf := range []string{
		"[neutron]\nauth_url = ftp://kuryr:s3cret@keystone/v3\n",
		"[neutron]\nauth_url = http://kuryr:s3 cret@keystone/v3\n",
	} {
		c, err := Parse([]byte(conf))
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), "auth_url") || strings.Contains(err.Error(), "s3") {
			t.Errorf("%q: error %v, want one naming auth_url without the password", conf, err)
		}
	}
}
