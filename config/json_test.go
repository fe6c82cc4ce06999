package config

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestRedactedJSONHidesSecrets(t *testing.T) {
	c := mustParse(t, `
[neutron]
auth_type = v3applicationcredential
auth_url = https://keystone.example:5000/v3
username = kuryr
password = Tr0ub4dor$$3-horse
application_credential_id = 9b1a
application_credential_secret = zUxf8-appcred-SECRET
`)
	if c.Neutron.Password != "Tr0ub4dor$3-horse" {
		t.Fatalf("password = %q", c.Neutron.Password)
	}
	out, err := c.RedactedJSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"Tr0ub4dor", "horse", "zUxf8", "SECRET"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("RedactedJSON contains %q:\n%s", secret, out)
		}
	}
	var got map[string]map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	n := got["neutron"]
	if n["password"] != "***" || n["application_credential_secret"] != "***" {
		t.Errorf("secrets = %v, %v; want *** for both", n["password"], n["application_credential_secret"])
	}
	// Not secret: shown as they are, so an operator can check them.
	if n["username"] != "kuryr" || n["application_credential_id"] != "9b1a" {
		t.Errorf("username, application_credential_id = %v, %v", n["username"], n["application_credential_id"])
	}
}

func TestRedactedJSONShape(t *testing.T) {
	c := Default()
	c.VIFPool.VIFPoolMapping = nil // set in code; still rendered as an object
	c.Kubernetes.EnabledHandlers = nil
	out, err := c.RedactedJSON()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	// Every option under its kuryr name; deprecated names are folded into their successors.
	for _, o := range options {
		_, ok := got[o.section][o.name]
		if ok != (o.deprecatedFor == "") {
			t.Errorf("[%s] %s present = %v", o.section, o.name, ok)
		}
	}
	vp := got["vif_pool"]
	if vp["ports_pool_update_frequency"] != 20.0 || vp["ports_pool_min"] != 5.0 {
		t.Errorf("seconds and ints must be numbers: %v, %v", vp["ports_pool_update_frequency"], vp["ports_pool_min"])
	}
	if m, ok := vp["vif_pool_mapping"].(map[string]any); !ok || len(m) != 0 {
		t.Errorf("vif_pool_mapping = %#v, want {}", vp["vif_pool_mapping"])
	}
	if l, ok := got["kubernetes"]["enabled_handlers"].([]any); !ok || len(l) != 0 {
		t.Errorf("enabled_handlers = %#v, want []", got["kubernetes"]["enabled_handlers"])
	}
	if got["neutron"]["password"] != "" {
		t.Errorf("unset password = %v, want empty", got["neutron"]["password"])
	}
}
