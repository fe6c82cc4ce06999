package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse: no input makes Parse or anything after it panic; every error has a message; a config
// that parsed always renders as JSON with its secrets masked.
func FuzzParse(f *testing.F) {
	// Seeds are the testdata files, large ones one section at a time: the fuzzer minimises every
	// new input it finds, and minimising a 4 KB file eats the whole fuzzing budget.
	files, _ := filepath.Glob(filepath.Join("testdata", "*.conf"))
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if len(data) < 1024 {
			f.Add(data)
			continue
		}
		for i, sec := range strings.Split(string(data), "\n[") {
			if i > 0 {
				sec = "[" + sec
			}
			f.Add([]byte(sec))
		}
	}
	for _, s := range []string{
		"",
		"[neutron]\npassword = a$$b$c\n",
		"[DEFAULT]\na = $b\nb = ${a}\n[neutron]\nregion_name = $a\n",
		"[vif_pool]\nvif_pool_mapping = a:b,c\n",
		"key = \"\"\"multi\nline\"\"\"\n",
		"[kubernetes]\nenabled_handlers = a,\n  b\n\t c\n",
		"[vif_pool]\nports_pool_cooldown = 99999999999\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatalf("Parse error with an empty message for %q", data)
			}
			return
		}
		if err := c.Validate(); err != nil && strings.TrimSpace(err.Error()) == "" {
			t.Fatalf("Validate error with an empty message for %q", data)
		}
		if _, err := c.PoolMapping(); err != nil && strings.TrimSpace(err.Error()) == "" {
			t.Fatalf("PoolMapping error with an empty message for %q", data)
		}
		_ = c.Warnings()
		_ = c.Unknown()
		out, err := c.RedactedJSON()
		if err != nil {
			t.Fatalf("RedactedJSON: %v", err)
		}
		var got map[string]map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("RedactedJSON is not JSON: %v", err)
		}
		for name, secret := range map[string]string{
			"password":                      c.Neutron.Password,
			"application_credential_secret": c.Neutron.ApplicationCredentialSecret,
		} {
			if v := got["neutron"][name]; secret != "" && v != "***" {
				t.Fatalf("[neutron] %s rendered as %v", name, v)
			}
		}
	})
}
