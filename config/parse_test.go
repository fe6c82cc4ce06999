package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, conf string) *Config {
	t.Helper()
	c, err := Parse([]byte(conf))
	if err != nil {
		t.Fatalf("Parse(%q): %v", conf, err)
	}
	return c
}

func TestParseValues(t *testing.T) {
	tests := []struct {
		name string
		conf string
		got  func(c *Config) any
		want any
	}{
		// Booleans: oslo's True/False, yes/no, 1/0, on/off in any case.
		{"bool True", "[kubernetes]\nenable_manager = True", func(c *Config) any { return c.Kubernetes.EnableManager }, true},
		{"bool TRUE", "[kubernetes]\nenable_manager = TRUE", func(c *Config) any { return c.Kubernetes.EnableManager }, true},
		{"bool yes", "[kubernetes]\nenable_manager = yes", func(c *Config) any { return c.Kubernetes.EnableManager }, true},
		{"bool 1", "[kubernetes]\nenable_manager = 1", func(c *Config) any { return c.Kubernetes.EnableManager }, true},
		{"bool On", "[kubernetes]\nenable_manager = On", func(c *Config) any { return c.Kubernetes.EnableManager }, true},
		{"bool False", "[kubernetes]\nuse_events = False", func(c *Config) any { return c.Kubernetes.UseEvents }, false},
		{"bool no", "[kubernetes]\nuse_events = no", func(c *Config) any { return c.Kubernetes.UseEvents }, false},
		{"bool 0", "[kubernetes]\nuse_events = 0", func(c *Config) any { return c.Kubernetes.UseEvents }, false},
		{"bool OFF", "[kubernetes]\nuse_events = OFF", func(c *Config) any { return c.Kubernetes.UseEvents }, false},
		{"bool empty keeps default", "[kubernetes]\nuse_events =", func(c *Config) any { return c.Kubernetes.UseEvents }, true},
		// Integers.
		{"int", "[vif_pool]\nports_pool_min = 7", func(c *Config) any { return c.VIFPool.PortsPoolMin }, 7},
		{"int plus sign", "[vif_pool]\nports_pool_min = +7", func(c *Config) any { return c.VIFPool.PortsPoolMin }, 7},
		{"int zero max", "[vif_pool]\nports_pool_max = 0", func(c *Config) any { return c.VIFPool.PortsPoolMax }, 0},
		{"int empty keeps default", "[vif_pool]\nports_pool_min =", func(c *Config) any { return c.VIFPool.PortsPoolMin }, 5},
		{"int -1 memory", "[cni_health_server]\nmax_memory_usage = -1", func(c *Config) any { return c.CNIHealthServer.MaxMemoryUsage }, -1},
		// Seconds.
		{"seconds", "[vif_pool]\nports_pool_update_frequency = 30", func(c *Config) any { return c.VIFPool.PortsPoolUpdateFrequency }, 30 * time.Second},
		{"seconds cooldown", "[vif_pool]\nports_pool_cooldown = 45", func(c *Config) any { return c.VIFPool.PortsPoolCooldown }, 45 * time.Second},
		{"seconds idle", "[vif_pool]\nports_pool_idle_timeout = 600", func(c *Config) any { return c.VIFPool.PortsPoolIdleTimeout }, 10 * time.Minute},
		{"seconds pool wait", "[cni_daemon]\npool_wait_timeout = 0", func(c *Config) any { return c.CNIDaemon.PoolWaitTimeout }, time.Duration(0)},
		{"seconds neutron timeout", "[neutron]\ntimeout = 15", func(c *Config) any { return c.Neutron.Timeout }, 15 * time.Second},
		// Floats.
		{"float", "[neutron]\nqps = 2.5", func(c *Config) any { return c.Neutron.QPS }, 2.5},
		{"float int form", "[neutron]\nqps = 100", func(c *Config) any { return c.Neutron.QPS }, 100.0},
		// Lists.
		{"list spaces trimmed", "[neutron_defaults]\npod_security_groups = a, b ,c", func(c *Config) any { return c.NeutronDefaults.PodSecurityGroups }, []string{"a", "b", "c"}},
		{"list empty", "[kubernetes]\nenabled_handlers =", func(c *Config) any { return c.Kubernetes.EnabledHandlers }, []string{}},
		{"list trailing comma", "[neutron_defaults]\nresource_tags = t1,", func(c *Config) any { return c.NeutronDefaults.ResourceTags }, []string{"t1"}},
		{"list single", "[pod_vif_nested]\nworker_nodes_subnets = s1", func(c *Config) any { return c.PodVIFNested.WorkerNodesSubnets }, []string{"s1"}},
		{"list on continuation lines", "[neutron_defaults]\npod_security_groups = a,\n    b,\n    c\nproject = p", func(c *Config) any { return c.NeutronDefaults.PodSecurityGroups }, []string{"a", "b", "c"}},
		// Dicts.
		{"dict", "[vif_pool]\nvif_pool_mapping = nested-vlan:nested, neutron-vif : neutron", func(c *Config) any { return c.VIFPool.VIFPoolMapping }, map[string]string{"nested-vlan": "nested", "neutron-vif": "neutron"}},
		{"dict empty", "[vif_pool]\nvif_pool_mapping =", func(c *Config) any { return c.VIFPool.VIFPoolMapping }, map[string]string{}},
		{"dict value keeps later colons", "[vif_pool]\nvif_pool_mapping = a:b:c", func(c *Config) any { return c.VIFPool.VIFPoolMapping }, map[string]string{"a": "b:c"}},
		// Strings and INI syntax, as oslo.config reads them.
		{"string", "[neutron]\nregion_name = RegionOne", func(c *Config) any { return c.Neutron.RegionName }, "RegionOne"},
		{"string double quotes stripped", "[neutron]\nregion_name = \"Region One\"", func(c *Config) any { return c.Neutron.RegionName }, "Region One"},
		{"string single quotes stripped", "[neutron]\nregion_name = 'r1'", func(c *Config) any { return c.Neutron.RegionName }, "r1"},
		{"no inline comments", "[neutron]\nregion_name = r1 # not a comment", func(c *Config) any { return c.Neutron.RegionName }, "r1 # not a comment"},
		{"hash comment line", "[neutron]\n# region_name = r2\nregion_name = r1", func(c *Config) any { return c.Neutron.RegionName }, "r1"},
		{"semicolon comment line", "[neutron]\n; region_name = r2\nregion_name = r1", func(c *Config) any { return c.Neutron.RegionName }, "r1"},
		{"colon delimiter", "[neutron]\nregion_name: r1", func(c *Config) any { return c.Neutron.RegionName }, "r1"},
		{"no backslash continuation", "[neutron]\nregion_name = r1\\\nproject_name = p", func(c *Config) any { return c.Neutron.RegionName }, "r1\\"},
		{"section name case-insensitive", "[Kubernetes]\nvif_pool_driver = neutron", func(c *Config) any { return c.Kubernetes.VIFPoolDriver }, "neutron"},
		{"DEFAULT section", "[DEFAULT]\ndebug = true\nlog_file = /var/log/kuryr.log", func(c *Config) any { return c.Default.Debug && c.Default.LogFile == "/var/log/kuryr.log" }, true},
		{"options before any section are DEFAULT", "debug = true\n[kubernetes]\n", func(c *Config) any { return c.Default.Debug }, true},
		{"last duplicate wins", "[vif_pool]\nports_pool_min = 1\nports_pool_min = 2", func(c *Config) any { return c.VIFPool.PortsPoolMin }, 2},
		{"repeated section merges", "[vif_pool]\nports_pool_min = 1\n[kubernetes]\n[vif_pool]\nports_pool_max = 9", func(c *Config) any { return [2]int{c.VIFPool.PortsPoolMin, c.VIFPool.PortsPoolMax} }, [2]int{1, 9}},
		{"percent is literal", "[DEFAULT]\nlog_file = /var/log/%(name)s.log", func(c *Config) any { return c.Default.LogFile }, "/var/log/%(name)s.log"},
		{"UTF-8 BOM", "\ufeff[vif_pool]\nports_pool_min = 3", func(c *Config) any { return c.VIFPool.PortsPoolMin }, 3},
		{"CRLF line ends", "[vif_pool]\r\nports_pool_min = 3\r\n", func(c *Config) any { return c.VIFPool.PortsPoolMin }, 3},
		// oslo.config $-substitution.
		{"$$ is a literal $", "[neutron]\npassword = pa$$word", func(c *Config) any { return c.Neutron.Password }, "pa$word"},
		{`\$ is a literal $`, "[neutron]\npassword = pa\\$word", func(c *Config) any { return c.Neutron.Password }, "pa$word"},
		{"$ before a non-name stays", "[neutron]\npassword = 100$ or $1", func(c *Config) any { return c.Neutron.Password }, "100$ or $1"},
		{"${ without a name stays", "[neutron]\npassword = a${-}b", func(c *Config) any { return c.Neutron.Password }, "a${-}b"},
		{"$name from the same section", "[neutron]\nproject_name = k8s\nusername = $project_name-admin", func(c *Config) any { return c.Neutron.Username }, "k8s-admin"},
		{"${name} from DEFAULT", "[DEFAULT]\nstate_path = /var/lib/kuryr\n[cni_daemon]\ncheckpoint_path = ${state_path}/checkpoint.json", func(c *Config) any { return c.CNIDaemon.CheckpointPath }, "/var/lib/kuryr/checkpoint.json"},
		{"${section.name}", "[neutron_defaults]\nproject = p1\n[neutron]\nproject_id = ${neutron_defaults.project}", func(c *Config) any { return c.Neutron.ProjectID }, "p1"},
		{"reference to a default", "[cni_daemon]\nmetrics_address = 127.0.0.2:${cni_health_server.port}", func(c *Config) any { return c.CNIDaemon.MetricsAddress }, "127.0.0.2:8090"},
		{"chained references", "[DEFAULT]\na = x\nb = $a$a\n[neutron]\nregion_name = $b", func(c *Config) any { return c.Neutron.RegionName }, "xx"},
		// Deprecated names.
		{"binding driver alias", "[binding]\ndriver = kuryr.lib.binding.drivers.vlan", func(c *Config) any { return c.Binding.Driver }, "kuryr.lib.binding.drivers.vlan"},
		{"default_driver wins over driver", "[binding]\ndriver = a\ndefault_driver = b", func(c *Config) any { return c.Binding.Driver }, "b"},
		{"auth_plugin alias", "[neutron]\nauth_plugin = v3password", func(c *Config) any { return c.Neutron.AuthType }, "v3password"},
		{"tenant_name alias", "[neutron]\ntenant_name = demo", func(c *Config) any { return c.Neutron.ProjectName }, "demo"},
		{"worker_nodes_subnet merged", "[pod_vif_nested]\nworker_nodes_subnets = a\nworker_nodes_subnet = b", func(c *Config) any { return c.PodVIFNested.WorkerNodesSubnets }, []string{"a", "b"}},
		{"worker_nodes_subnet not duplicated", "[pod_vif_nested]\nworker_nodes_subnets = a\nworker_nodes_subnet = a", func(c *Config) any { return c.PodVIFNested.WorkerNodesSubnets }, []string{"a"}},
		{"interface", "[neutron]\ninterface = admin", func(c *Config) any { return c.Neutron.Interface }, "admin"},
		{"interface old spelling", "[neutron]\ninterface = internalURL", func(c *Config) any { return c.Neutron.Interface }, "internal"},
		{"valid_interfaces first wins", "[neutron]\ninterface = public\nvalid_interfaces = internal,public", func(c *Config) any { return c.Neutron.Interface }, "internal"},
		{"valid_interfaces empty keeps interface", "[neutron]\ninterface = admin\nvalid_interfaces =", func(c *Config) any { return c.Neutron.Interface }, "admin"},
		// health_address follows kuryr's port unless set.
		{"health address from port", "[cni_health_server]\nport = 8091", func(c *Config) any { return c.CNIHealthServer.HealthAddress }, "127.0.0.1:8091"},
		{"health address explicit", "[cni_health_server]\nhealth_address = 0.0.0.0:9000", func(c *Config) any { return c.CNIHealthServer.HealthAddress }, "0.0.0.0:9000"},
		{"ipv6 health address", "[cni_health_server]\nhealth_address = [::1]:9000", func(c *Config) any { return c.CNIHealthServer.HealthAddress }, "[::1]:9000"},
		{"metrics off", "[cni_daemon]\nmetrics_address =", func(c *Config) any { return c.CNIDaemon.MetricsAddress }, ""},
		{"mtu", "[neutron_defaults]\nnetwork_device_mtu = 1450", func(c *Config) any { return c.NeutronDefaults.NetworkDeviceMTU }, 1450},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.conf)
			if got := tt.got(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name                   string
		conf                   string
		section, option, value string
		reason                 string
	}{
		{"int", "[vif_pool]\nports_pool_min = abc", "vif_pool", "ports_pool_min", "abc", "not an integer"},
		{"int float", "[vif_pool]\nports_pool_max = 1.5", "vif_pool", "ports_pool_max", "1.5", "not an integer"},
		{"int overflow", "[vif_pool]\nports_pool_max = 99999999999999999999", "vif_pool", "ports_pool_max", "99999999999999999999", "out of range"},
		{"negative max", "[vif_pool]\nports_pool_max = -1", "vif_pool", "ports_pool_max", "-1", "must not be negative"},
		{"negative min", "[vif_pool]\nports_pool_min = -5", "vif_pool", "ports_pool_min", "-5", "must not be negative"},
		{"zero batch", "[vif_pool]\nports_pool_batch = 0", "vif_pool", "ports_pool_batch", "0", "greater than 0"},
		{"zero update frequency", "[vif_pool]\nports_pool_update_frequency = 0", "vif_pool", "ports_pool_update_frequency", "0", "greater than 0"},
		{"seconds not int", "[vif_pool]\nports_pool_update_frequency = 20s", "vif_pool", "ports_pool_update_frequency", "20s", "not an integer"},
		{"seconds overflow", "[vif_pool]\nports_pool_cooldown = 9223372036854775807", "vif_pool", "ports_pool_cooldown", "9223372036854775807", "too many seconds"},
		{"negative cooldown", "[vif_pool]\nports_pool_cooldown = -1", "vif_pool", "ports_pool_cooldown", "-1", "must not be negative"},
		{"negative idle", "[vif_pool]\nports_pool_idle_timeout = -1", "vif_pool", "ports_pool_idle_timeout", "-1", "must not be negative"},
		{"bool", "[kubernetes]\nenable_manager = maybe", "kubernetes", "enable_manager", "maybe", "not a boolean"},
		{"float", "[neutron]\nqps = fast", "neutron", "qps", "fast", "not a number"},
		{"float NaN", "[neutron]\nqps = NaN", "neutron", "qps", "NaN", "not a number"},
		{"qps zero", "[neutron]\nqps = 0", "neutron", "qps", "0", "greater than 0"},
		{"burst zero", "[neutron]\nburst = 0", "neutron", "burst", "0", "greater than 0"},
		{"concurrency zero", "[neutron]\nmax_concurrent_requests = 0", "neutron", "max_concurrent_requests", "0", "greater than 0"},
		{"dict without colon", "[vif_pool]\nvif_pool_mapping = nested-vlan", "vif_pool", "vif_pool_mapping", "nested-vlan", `"nested-vlan" is not key:value`},
		{"dict empty key", "[vif_pool]\npools_vif_drivers = :nested-vlan", "vif_pool", "pools_vif_drivers", ":nested-vlan", "empty key"},
		{"vif_pool_driver enum", "[kubernetes]\nvif_pool_driver = pooled", "kubernetes", "vif_pool_driver", "pooled", "must be one of noop, neutron, nested, multi_pool"},
		{"pod_vif_driver enum", "[kubernetes]\npod_vif_driver = sriov", "kubernetes", "pod_vif_driver", "sriov", "must be one of"},
		{"pod_subnets_driver enum", "[kubernetes]\npod_subnets_driver = openshift", "kubernetes", "pod_subnets_driver", "openshift", "must be one of default, namespace"},
		{"pod_security_groups_driver enum", "[kubernetes]\npod_security_groups_driver = namespace", "kubernetes", "pod_security_groups_driver", "namespace", "must be one of default, policy"},
		{"pod_project_driver enum", "[kubernetes]\npod_project_driver = x", "kubernetes", "pod_project_driver", "x", "must be one of default, annotation"},
		{"empty enum", "[kubernetes]\nvif_pool_driver =", "kubernetes", "vif_pool_driver", "", "must be one of"},
		{"auth_type enum", "[neutron]\nauth_type = token", "neutron", "auth_type", "token", "must be one of"},
		{"auth_type via deprecated name", "[neutron]\nauth_plugin = token", "neutron", "auth_plugin", "token", "must be one of"},
		{"interface enum", "[neutron]\ninterface = private", "neutron", "interface", "private", "must be one of public, internal, admin"},
		{"valid_interfaces enum", "[neutron]\nvalid_interfaces = private", "neutron", "valid_interfaces", "private", "must be one of public, internal, admin"},
		{"default_vif_type enum", "[binding]\ndefault_vif_type = macvtap", "binding", "default_vif_type", "macvtap", "must be one of ovs, bridge"},
		{"auth_url", "[neutron]\nauth_url = keystone:5000", "neutron", "auth_url", "keystone:5000", "not an http or https URL"},
		{"endpoint_override", "[neutron]\nendpoint_override = ftp://x", "neutron", "endpoint_override", "ftp://x", "not an http or https URL"},
		{"api_root", "[kubernetes]\napi_root = 10.0.0.1:6443", "kubernetes", "api_root", "10.0.0.1:6443", "not an http or https URL"},
		{"bind_address", "[cni_daemon]\nbind_address = localhost", "cni_daemon", "bind_address", "localhost", "not a host:port address"},
		{"metrics_address port", "[cni_daemon]\nmetrics_address = :http", "cni_daemon", "metrics_address", ":http", "port must be a number"},
		{"health_address", "[cni_health_server]\nhealth_address = 8090", "cni_health_server", "health_address", "8090", "not a host:port address"},
		{"health port range", "[cni_health_server]\nport = 70000", "cni_health_server", "port", "70000", "not a port number"},
		{"max_memory_usage", "[cni_health_server]\nmax_memory_usage = -2", "cni_health_server", "max_memory_usage", "-2", "must be at least -1"},
		{"socket_path relative", "[cni_daemon]\nsocket_path = cni.sock", "cni_daemon", "socket_path", "cni.sock", "absolute path"},
		{"checkpoint_path empty", "[cni_daemon]\ncheckpoint_path =", "cni_daemon", "checkpoint_path", "", "absolute path"},
		{"sock_file relative", "[pool_manager]\nsock_file = run/m.sock", "pool_manager", "sock_file", "run/m.sock", "absolute path"},
		{"mtu", "[neutron_defaults]\nnetwork_device_mtu = 60", "neutron_defaults", "network_device_mtu", "60", "between 68 and 65535"},
		{"link_iface", "[binding]\nlink_iface = a-very-long-interface", "binding", "link_iface", "a-very-long-interface", "not a network interface name"},
		{"linux_bridge", "[binding]\nlinux_bridge = br/0", "binding", "linux_bridge", "br/0", "not a network interface name"},
		{"resource tag too long", "[neutron_defaults]\nresource_tags = ok," + strings.Repeat("t", 61), "neutron_defaults", "resource_tags", "ok," + strings.Repeat("t", 61), "longer than Neutron's 60"},
		{"cluster_name empty", "[kubernetes]\ncluster_name =", "kubernetes", "cluster_name", "", "must not be empty"},
		{"cluster_name too long", "[kubernetes]\ncluster_name = " + strings.Repeat("c", 47), "kubernetes", "cluster_name", strings.Repeat("c", 47), "too long"},
		{"cluster_name space", "[kubernetes]\ncluster_name = a b", "kubernetes", "cluster_name", "a b", "must not contain commas or spaces"},
		{"watch period", "[kubernetes]\nwatch_reconcile_period = -1", "kubernetes", "watch_reconcile_period", "-1", "must not be negative"},
		{"vif annotation timeout", "[cni_daemon]\nvif_annotation_timeout = 0", "cni_daemon", "vif_annotation_timeout", "0", "greater than 0"},
		{"cache_time", "[node_driver_caching]\ncache_time = -1", "node_driver_caching", "cache_time", "-1", "must not be negative"},
		{"unknown substitution", "[neutron]\nregion_name = $nowhere", "neutron", "region_name", "$nowhere", "cannot expand $nowhere"},
		{"substitution loop", "[DEFAULT]\na = $b\nb = $a\n[neutron]\nregion_name = $a", "neutron", "region_name", "$a", "cannot expand $a: it refers back to itself"},
		{"self reference", "[neutron]\nregion_name = x$region_name", "neutron", "region_name", "x$region_name", "refers back to itself"},
		{"expansion bound", "[DEFAULT]\na = " + strings.Repeat("x", 1000) + "\nb = " + strings.Repeat("$a", 100) + "\n[neutron]\nregion_name = $b", "neutron", "region_name", "$b", "expands to more than 65536 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.conf))
			if err == nil {
				t.Fatalf("Parse(%q) = nil error, want %q", tt.conf, tt.reason)
			}
			want := "[" + tt.section + "] " + tt.option + " = " + quote(tt.value) + ": "
			if msg := err.Error(); !strings.Contains(msg, want) || !strings.Contains(msg, tt.reason) {
				t.Errorf("error %q\nwant it to contain %q and %q", msg, want, tt.reason)
			}
			var oe *OptionError
			if !errors.As(err, &oe) || oe.Section != tt.section || oe.Option != tt.option {
				t.Errorf("error %v: want an *OptionError for [%s] %s", err, tt.section, tt.option)
			}
		})
	}
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }

// References fan out: each level doubles, so without memoising, expanding $v40 would take 2^40
// steps even though every value is empty.
func TestSubstitutionIsLinear(t *testing.T) {
	var b strings.Builder
	b.WriteString("[DEFAULT]\nv0 =\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&b, "v%d = ${v%d}$v%d\n", i, i-1, i-1)
	}
	b.WriteString("[neutron]\nregion_name = r$v40\n")
	c := mustParse(t, b.String())
	if c.Neutron.RegionName != "r" {
		t.Errorf("region_name = %q, want r", c.Neutron.RegionName)
	}
}

func TestParseErrorsAreAllReported(t *testing.T) {
	_, err := Parse([]byte("[vif_pool]\nports_pool_min = abc\nports_pool_batch = 0\n[kubernetes]\npod_vif_driver = x\n"))
	if err == nil {
		t.Fatal("want an error")
	}
	for _, opt := range []string{"ports_pool_min", "ports_pool_batch", "pod_vif_driver"} {
		if !strings.Contains(err.Error(), opt) {
			t.Errorf("error %q does not report %s", err, opt)
		}
	}
}

func TestParseSyntaxErrors(t *testing.T) {
	for _, conf := range []string{
		"[kubernetes\nvif_pool_driver = neutron", // unclosed section
		"[kubernetes]\nvif_pool_driver",          // no delimiter
		"[kubernetes]\n= neutron",                // empty key
		"[]\na = b",                              // empty section name
	} {
		_, err := Parse([]byte(conf))
		if err == nil || !strings.Contains(err.Error(), "not a valid INI file") {
			t.Errorf("Parse(%q) error = %v, want an INI syntax error", conf, err)
		}
	}
}

func TestInvalidHealthPortReportedOnce(t *testing.T) {
	_, err := Parse([]byte("[cni_health_server]\nport = 70000\n"))
	if err == nil || !strings.Contains(err.Error(), "[cni_health_server] port") || strings.Contains(err.Error(), "health_address") {
		t.Errorf("error = %v, want only the port reported", err)
	}
}

func TestSecretNotInErrors(t *testing.T) {
	for _, conf := range []string{
		"[neutron]\npassword = hunter2$x",
		"[neutron]\napplication_credential_secret = hunter2$x",
	} {
		_, err := Parse([]byte(conf))
		if err == nil {
			t.Fatalf("Parse(%q): want an error", conf)
		}
		if strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), `"***"`) {
			t.Errorf("error %q must mask the secret as ***", err)
		}
	}
}

func TestUnknown(t *testing.T) {
	c := mustParse(t, `
[DEFAULT]
use_stderr = true
[octavia_defaults]
member_mode = L3
[kubernetes]
vif_pool_driver = neutron
nodes_subnets_driver = config
[neutron]
valid_interfaces = public
[empty_section]
[default]
debug = true
`)
	// oslo.config matches only "DEFAULT" exactly; [default] is an ordinary, unknown section.
	want := []string{"DEFAULT.use_stderr", "default.debug", "kubernetes.nodes_subnets_driver", "octavia_defaults.member_mode"}
	if got := c.Unknown(); !slices.Equal(got, want) {
		t.Errorf("Unknown() = %q, want %q", got, want)
	}
	if c.Kubernetes.VIFPoolDriver != "neutron" || c.Default.Debug {
		t.Errorf("vif_pool_driver = %q, debug = %v; want neutron, false", c.Kubernetes.VIFPoolDriver, c.Default.Debug)
	}
	// The returned slice is a copy.
	c.Unknown()[0] = "x"
	if c.Unknown()[0] != want[0] {
		t.Error("Unknown() exposes internal state")
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadMergesFilesInOrder(t *testing.T) {
	t.Setenv("OS_CLOUD", "")
	base := writeFile(t, "kuryr.conf", "[vif_pool]\nports_pool_min = 2\nports_pool_max = 20\n[kubernetes]\nvif_pool_driver = neutron\n")
	override := writeFile(t, "override.conf", "[vif_pool]\nports_pool_min = 4\n[neutron]\nregion_name = r2\n")
	c, err := Load(base, override)
	if err != nil {
		t.Fatal(err)
	}
	if c.VIFPool.PortsPoolMin != 4 || c.VIFPool.PortsPoolMax != 20 || c.Kubernetes.VIFPoolDriver != "neutron" || c.Neutron.RegionName != "r2" {
		t.Errorf("merge: min=%d max=%d driver=%s region=%s, want 4 20 neutron r2",
			c.VIFPool.PortsPoolMin, c.VIFPool.PortsPoolMax, c.Kubernetes.VIFPoolDriver, c.Neutron.RegionName)
	}
	// Reversed, the first file's value wins.
	c, err = Load(override, base)
	if err != nil {
		t.Fatal(err)
	}
	if c.VIFPool.PortsPoolMin != 2 {
		t.Errorf("reversed merge: min = %d, want 2", c.VIFPool.PortsPoolMin)
	}
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	t.Setenv("OS_CLOUD", "")
	good := writeFile(t, "good.conf", "[vif_pool]\nports_pool_max = 5\n")
	bad := writeFile(t, "bad.conf", "[vif_pool]\nports_pool_min = abc\n")
	_, err := Load(good, bad)
	if err == nil || !strings.HasPrefix(err.Error(), bad+`: [vif_pool] ports_pool_min = "abc": not an integer`) {
		t.Errorf("Load error = %v, want it prefixed by %s", err, bad)
	}

	// A cross-option error points at the file that set the offending value.
	minFile := writeFile(t, "min.conf", "[vif_pool]\nports_pool_min = 10\n")
	_, err = Load(good, minFile)
	if err == nil || !strings.Contains(err.Error(), minFile+`: [vif_pool] ports_pool_min = "10": must not exceed ports_pool_max (5)`) {
		t.Errorf("Load error = %v, want the min > max error naming %s", err, minFile)
	}

	syntax := writeFile(t, "syntax.conf", "[vif_pool\n")
	if _, err := Load(syntax); err == nil || !strings.Contains(err.Error(), syntax+": not a valid INI file") {
		t.Errorf("Load error = %v, want a syntax error naming the file", err)
	}

	missing := filepath.Join(t.TempDir(), "missing.conf")
	if _, err := Load(missing); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want os.ErrNotExist", err)
	}
}

func TestLoadNoPathsIsDefault(t *testing.T) {
	t.Setenv("OS_CLOUD", "")
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := c.RedactedJSON()
	want, _ := Default().RedactedJSON()
	if string(got) != string(want) {
		t.Errorf("Load() differs from Default():\n%s\n%s", got, want)
	}
	if len(c.Warnings()) != 0 || len(c.Unknown()) != 0 {
		t.Errorf("Load(): warnings %q, unknown %q; want none", c.Warnings(), c.Unknown())
	}
}

func TestLoadTakesOSCloud(t *testing.T) {
	tests := []struct {
		name, conf, env, want string
	}{
		{"no neutron section", "", "openstack", "openstack"},
		{"cloud in the file wins", "[neutron]\ncloud = mine\n", "openstack", "mine"},
		{"auth_url given", "[neutron]\nauth_url = http://keystone:5000/v3\nusername = u\npassword = p\n", "openstack", ""},
		{"auth_type none", "[neutron]\nauth_type = none\nendpoint_override = http://neutron:9696\n", "openstack", ""},
		{"no OS_CLOUD", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("OS_CLOUD", tt.env)
			c, err := Load(writeFile(t, "kuryr.conf", tt.conf))
			if err != nil {
				t.Fatal(err)
			}
			if c.Neutron.Cloud != tt.want {
				t.Errorf("cloud = %q, want %q", c.Neutron.Cloud, tt.want)
			}
		})
	}
}

func TestLoadRunsValidate(t *testing.T) {
	t.Setenv("OS_CLOUD", "")
	p := writeFile(t, "kuryr.conf", "[kubernetes]\npod_vif_driver = nested-macvlan\n")
	if _, err := Parse([]byte("[kubernetes]\npod_vif_driver = nested-macvlan\n")); err != nil {
		t.Fatalf("Parse must accept kuryr's nested-macvlan: %v", err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), `[kubernetes] pod_vif_driver = "nested-macvlan": kuryr's nested-macvlan driver is not supported`) {
		t.Errorf("Load error = %v, want nested-macvlan rejected", err)
	}
}
