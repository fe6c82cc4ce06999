package config

import (
	"flag"
	"os"
	"strings"
)

// DefaultPath is where kuryr.conf lives on a node and in the images.
const DefaultPath = "/etc/kuryr/kuryr.conf"

// Files is the repeatable --config-file flag of the binaries, as oslo.config's.
type Files []string

// String joins the files.
func (f *Files) String() string { return strings.Join(*f, ",") }

// Set adds a file.
func (f *Files) Set(v string) error { *f = append(*f, v); return nil }

// Register adds --config-file to fs.
func (f *Files) Register(fs *flag.FlagSet) {
	fs.Var(f, "config-file", "kuryr.conf to load; may be repeated, later files win (default "+DefaultPath+" when it exists)")
}

// Load loads the files given, or DefaultPath when none was and it exists, or all defaults.
func (f *Files) Load() (*Config, error) {
	paths := []string(*f)
	if len(paths) == 0 {
		if _, err := os.Stat(DefaultPath); err == nil {
			paths = []string{DefaultPath}
		}
	}
	return Load(paths...)
}
