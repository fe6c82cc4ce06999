package config

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Every kuryr.conf snippet of /work/shared/seeds is copied into testdata/ (each file names the seed
// it comes from) and must mean what the seed says it means.

func loadTestdata(t *testing.T, names ...string) *Config {
	t.Helper()
	t.Setenv("OS_CLOUD", "")
	paths := make([]string, len(names))
	for i, n := range names {
		paths[i] = filepath.Join("testdata", n)
	}
	raw := rawINI{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := readINI(raw, p, data); err != nil {
			t.Fatal(err)
		}
	}
	c, err := build(raw)
	if err != nil {
		t.Fatalf("%v: %v", names, err)
	}
	return c
}

func hasWarning(c *Config, sub string) bool {
	return slices.ContainsFunc(c.Warnings(), func(w string) bool { return strings.Contains(w, sub) })
}

func TestSeedSnippets(t *testing.T) {
	tests := []struct {
		name  string
		files []string
		check func(t *testing.T, c *Config)
	}{
		{
			// Seeds 000/003: "So, for the baremetal deployment: vif_pool_driver = neutron".
			"baremetal pool driver", []string{"seed000_baremetal.conf"},
			func(t *testing.T, c *Config) {
				if c.Kubernetes.VIFPoolDriver != "neutron" {
					t.Errorf("vif_pool_driver = %q, want neutron", c.Kubernetes.VIFPoolDriver)
				}
				if m, err := c.PoolMapping(); err != nil || !maps.Equal(m, map[string]string{"neutron-vif": "neutron"}) {
					t.Errorf("PoolMapping() = %v, %v; want bare-metal pods served by the neutron pool", m, err)
				}
				if err := c.Validate(); err != nil {
					t.Errorf("Validate() = %v", err)
				}
			},
		},
		{
			// Seeds 000/003: "And for the nested (VLAN+Trunk) case: vif_pool_driver = nested". A
			// nested pool serves nested-vlan pods and finds trunks on worker_nodes_subnets
			// (kuryr-behaviour.md §1); the snippet alone lacks both, and Validate says so.
			"nested pool driver", []string{"seed000_nested.conf"},
			func(t *testing.T, c *Config) {
				if c.Kubernetes.VIFPoolDriver != "nested" {
					t.Errorf("vif_pool_driver = %q, want nested", c.Kubernetes.VIFPoolDriver)
				}
				err := c.Validate()
				if err == nil || !strings.Contains(err.Error(), "a nested pool cannot serve pod VIF driver neutron-vif") ||
					!strings.Contains(err.Error(), "[pod_vif_nested] worker_nodes_subnets") {
					t.Errorf("Validate() = %v, want the nested-vlan and worker_nodes_subnets requirements", err)
				}
				c.Kubernetes.PodVIFDriver = "nested-vlan"
				c.PodVIFNested.WorkerNodesSubnets = []string{"worker-subnet"}
				if err := c.Validate(); err != nil {
					t.Errorf("complete nested deployment: Validate() = %v", err)
				}
				if m, _ := c.PoolMapping(); !maps.Equal(m, map[string]string{"nested-vlan": "nested"}) {
					t.Errorf("PoolMapping() = %v", m)
				}
			},
		},
		{
			// "the maximum and minimum desired sizes of the pools, where the maximum size can be
			// disabled by setting it to 0"
			"pool sizes", []string{"seed000_pool_sizes.conf"},
			func(t *testing.T, c *Config) {
				if c.VIFPool.PortsPoolMax != 10 || c.VIFPool.PortsPoolMin != 5 {
					t.Errorf("max, min = %d, %d; want 10, 5", c.VIFPool.PortsPoolMax, c.VIFPool.PortsPoolMin)
				}
				if err := c.Validate(); err != nil {
					t.Errorf("Validate() = %v", err)
				}
				c.VIFPool.PortsPoolMin = 11
				if err := c.Validate(); err == nil {
					t.Error("min 11 above max 10 must be invalid")
				}
				c.VIFPool.PortsPoolMax = 0 // disabled: no upper bound
				if err := c.Validate(); err != nil {
					t.Errorf("max 0 means no limit, yet Validate() = %v", err)
				}
			},
		},
		{
			// "the number of ports created in a bulk request upon pool population"
			"batch", []string{"seed000_batch.conf"},
			func(t *testing.T, c *Config) {
				if c.VIFPool.PortsPoolBatch != 5 {
					t.Errorf("ports_pool_batch = %d, want 5", c.VIFPool.PortsPoolBatch)
				}
				if len(c.Warnings()) != 0 {
					t.Errorf("Warnings() = %q: no max is set, so nothing to warn about", c.Warnings())
				}
			},
		},
		{
			// "Note this value should be smaller than the ports_pool_max (if the ports_pool_max is
			// enabled)." With the guide's max of 10 it is; with a larger batch it is a warning.
			"batch against max", []string{"seed000_pool_sizes.conf", "seed000_batch.conf"},
			func(t *testing.T, c *Config) {
				if len(c.Warnings()) != 0 {
					t.Errorf("batch 5 < max 10: Warnings() = %q", c.Warnings())
				}
				c.VIFPool.PortsPoolBatch = 15
				if !hasWarning(c, "this value should be smaller than the ports_pool_max") {
					t.Errorf("batch 15 > max 10: Warnings() = %q", c.Warnings())
				}
				if err := c.Validate(); err != nil {
					t.Errorf("batch > max is a warning, not an error: %v", err)
				}
				c.VIFPool.PortsPoolMax = 0
				if hasWarning(c, "ports_pool_batch") {
					t.Errorf("max disabled: Warnings() = %q", c.Warnings())
				}
			},
		},
		{
			// "the interval between pools updating actions (in seconds)"
			"update frequency", []string{"seed000_update_frequency.conf"},
			func(t *testing.T, c *Config) {
				if c.VIFPool.PortsPoolUpdateFrequency != 20*time.Second {
					t.Errorf("ports_pool_update_frequency = %v, want 20s", c.VIFPool.PortsPoolUpdateFrequency)
				}
			},
		},
		{
			// The guide's [vif_pool] options together, as seed 003 lists them.
			"the whole [vif_pool] of the guide",
			[]string{"seed000_pool_sizes.conf", "seed000_batch.conf", "seed000_update_frequency.conf"},
			func(t *testing.T, c *Config) {
				vp := c.VIFPool
				if vp.PortsPoolMax != 10 || vp.PortsPoolMin != 5 || vp.PortsPoolBatch != 5 || vp.PortsPoolUpdateFrequency != 20*time.Second {
					t.Errorf("[vif_pool] = %+v", vp)
				}
				if err := c.Validate(); err != nil || len(c.Warnings()) != 0 {
					t.Errorf("Validate() = %v, Warnings() = %q", err, c.Warnings())
				}
			},
		},
		{
			// "This will use a pool driver nested to handle the pods whose vif driver is nested-vlan,
			// and a pool driver neutron to handle the pods whose vif driver is neutron-vif." Nodes
			// without annotation use pod_vif_driver, which the mapping covers.
			"vif_pool_mapping", []string{"seed000_vif_pool_mapping.conf"},
			func(t *testing.T, c *Config) {
				want := map[string]string{"nested-vlan": "nested", "neutron-vif": "neutron"}
				if m, err := c.PoolMapping(); err != nil || !maps.Equal(m, want) {
					t.Errorf("PoolMapping() = %v, %v; want %v", m, err, want)
				}
				if len(c.Warnings()) != 0 {
					t.Errorf("Warnings() = %q", c.Warnings())
				}
				c.PodVIFNested.WorkerNodesSubnets = []string{"worker-subnet"}
				if err := c.Validate(); err != nil {
					t.Errorf("Validate() = %v", err)
				}
			},
		},
		{
			// "pools_vif_drivers ... is now deprecated and not recommended. It stored a mapping from
			// pool_driver => pod_vif_driver instead"
			"pools_vif_drivers", []string{"seed000_pools_vif_drivers.conf"},
			func(t *testing.T, c *Config) {
				want := map[string]string{"nested-vlan": "nested", "neutron-vif": "neutron"}
				if m, err := c.PoolMapping(); err != nil || !maps.Equal(m, want) {
					t.Errorf("PoolMapping() = %v, %v; want the inverse %v", m, err, want)
				}
				if !hasWarning(c, "pools_vif_drivers is deprecated") {
					t.Errorf("Warnings() = %q, want the deprecation", c.Warnings())
				}
			},
		},
		{
			// "In order to prepopulate the pools associated to a newly created namespace (i.e.,
			// subnet), the next handler needs to be enabled"
			"pre-population handlers", []string{"seed000_enabled_handlers.conf"},
			func(t *testing.T, c *Config) {
				k := c.Kubernetes
				if !k.PopulationEnabled() {
					t.Errorf("enabled_handlers %q: PopulationEnabled() = false", k.EnabledHandlers)
				}
				for _, h := range []string{"vif", "namespace", "kuryrnetwork", "kuryrnetwork_population"} {
					if !k.HasHandler(h) {
						t.Errorf("HasHandler(%q) = false", h)
					}
				}
				if k.HasHandler("kuryrport") {
					t.Error("HasHandler(kuryrport) = true, but the snippet does not enable it")
				}
			},
		},
		{
			// Seed 002: "enable the pool manager by adding this to /etc/kuryr/kuryr.conf ... the
			// default location for the socket file is: /run/kuryr/kuryr_manage.sock"
			"pool manager", []string{"seed002_enable_manager.conf"},
			func(t *testing.T, c *Config) {
				if !c.Kubernetes.EnableManager || c.PoolManager.SockFile != "/run/kuryr/kuryr_manage.sock" {
					t.Errorf("enable_manager = %v, sock_file = %q", c.Kubernetes.EnableManager, c.PoolManager.SockFile)
				}
				if err := c.Validate(); err != nil {
					t.Errorf("Validate() = %v", err)
				}
			},
		},
		{
			// Seed 003 lost the section headers: pasted as they are, the lines sit in [DEFAULT],
			// where oslo ignores them. Nothing is applied; every line gets a warning naming the
			// section it belongs in.
			"seed 003 lines without their sections", []string{"seed003_bare_lines.conf"},
			func(t *testing.T, c *Config) {
				d := Default()
				if c.Kubernetes.VIFPoolDriver != d.Kubernetes.VIFPoolDriver || c.VIFPool.PortsPoolMax != d.VIFPool.PortsPoolMax {
					t.Errorf("options in [DEFAULT] were applied to their sections")
				}
				for _, w := range []string{
					"[DEFAULT] vif_pool_driver is not a [DEFAULT] option and has no effect there; did you mean [kubernetes] vif_pool_driver?",
					"did you mean [vif_pool] ports_pool_max?",
					"did you mean [vif_pool] ports_pool_min?",
					"did you mean [vif_pool] ports_pool_batch?",
					"did you mean [vif_pool] ports_pool_update_frequency?",
				} {
					if !hasWarning(c, w) {
						t.Errorf("Warnings() = %q\nwant %q", c.Warnings(), w)
					}
				}
				if !slices.Contains(c.Unknown(), "DEFAULT.vif_pool_driver") {
					t.Errorf("Unknown() = %q", c.Unknown())
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, loadTestdata(t, tt.files...))
		})
	}
}

// Seed 004 (the ports-pool blueprint): "Ensure either a max size of the pool, or that ports not
// being used during a certain period of time are removed." The second is ports_pool_idle_timeout,
// off by default as in kuryr, which never implemented it.
func TestSeed004IdleRemoval(t *testing.T) {
	if d := Default().VIFPool.PortsPoolIdleTimeout; d != 0 {
		t.Errorf("default ports_pool_idle_timeout = %v, want 0 (off)", d)
	}
	c := mustParse(t, "[vif_pool]\nports_pool_max = 0\nports_pool_idle_timeout = 900\n")
	if c.VIFPool.PortsPoolIdleTimeout != 15*time.Minute {
		t.Errorf("ports_pool_idle_timeout = %v, want 15m", c.VIFPool.PortsPoolIdleTimeout)
	}
}

// A kuryr.conf as deployments ship it, with many options and sections this project does not use,
// loads unchanged.
func TestFullKuryrConf(t *testing.T) {
	t.Setenv("OS_CLOUD", "")
	c, err := Load(filepath.Join("testdata", "kuryr-full.conf"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"debug", c.Default.Debug, true},
		{"vif_pool_driver", c.Kubernetes.VIFPoolDriver, "nested"},
		{"pod_vif_driver", c.Kubernetes.PodVIFDriver, "nested-vlan"},
		{"pod_subnets_driver", c.Kubernetes.PodSubnetsDriver, "namespace"},
		{"pod_security_groups_driver", c.Kubernetes.PodSecurityGroupsDriver, "policy"},
		{"api_root", c.Kubernetes.APIRoot, "https://10.0.0.115:6443"},
		{"ssl_verify_server_crt", c.Kubernetes.SSLVerifyServerCrt, true},
		{"controller_ha", c.Kubernetes.ControllerHA, true},
		{"population", c.Kubernetes.PopulationEnabled(), true},
		{"ports_pool_min", c.VIFPool.PortsPoolMin, 2},
		{"ports_pool_batch", c.VIFPool.PortsPoolBatch, 5},
		{"ports_pool_update_frequency", c.VIFPool.PortsPoolUpdateFrequency, 30 * time.Second},
		{"binding driver (deprecated name)", c.Binding.Driver, "kuryr.lib.binding.drivers.vlan"},
		{"link_iface", c.Binding.LinkIface, "ens3"},
		{"vif_annotation_timeout", c.CNIDaemon.VIFAnnotationTimeout, 120 * time.Second},
		{"netns_proc_dir", c.CNIDaemon.NetnsProcDir, "/host_proc"},
		{"max_memory_usage", c.CNIHealthServer.MaxMemoryUsage, 2048},
		{"health_address", c.CNIHealthServer.HealthAddress, "127.0.0.1:8090"},
		{"auth_url", c.Neutron.AuthURL, "http://10.0.0.115/identity"},
		{"password ($$ escape)", c.Neutron.Password, "s3cr$t-Pa55"},
		{"interface (valid_interfaces)", c.Neutron.Interface, "internal"},
		{"project_domain_name", c.Neutron.ProjectDomainName, "Default"},
		{"pod_security_groups", strings.Join(c.NeutronDefaults.PodSecurityGroups, ","), "1d7ad2f3-0c9c-47b0-86a2-2a3b24d9d6ad,6bd7a9e1-1e68-4d38-8ea7-02dd0d9f9dd8"},
		{"resource_tags", strings.Join(c.NeutronDefaults.ResourceTags, ","), "k8s-cluster-a"},
		{"network_device_mtu", c.NeutronDefaults.NetworkDeviceMTU, 1450},
		{"worker_nodes_subnets", strings.Join(c.PodVIFNested.WorkerNodesSubnets, ","), "4d3c2b1a-0f9e-4d8c-b7a6-958473625140"},
		{"pod_subnet_pool", c.NamespaceSubnet.PodSubnetPool, "7c6b5a49-3827-4165-9483-726150493827"},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
	if m, err := c.PoolMapping(); err != nil || !maps.Equal(m, map[string]string{"nested-vlan": "nested"}) {
		t.Errorf("PoolMapping() = %v, %v", m, err)
	}
	wantWarnings := []string{
		"[binding] driver is deprecated: use default_driver",
		`[neutron] valid_interfaces = "internal,public": only the first interface, internal, is used`,
	}
	if w := c.Warnings(); !slices.Equal(w, wantWarnings) {
		t.Errorf("Warnings() = %q\nwant %q", w, wantWarnings)
	}
	unknown := c.Unknown()
	for _, u := range []string{
		"DEFAULT.logging_context_format_string", "oslo_concurrency.lock_path", "cni_health_server.cg_path",
		"health_server.port", "ingress.l7_router_uuid", "kubernetes.controller_ha_elector_port",
		"kuryr-kubernetes.controller_ha", "octavia_defaults.member_mode", "prometheus_exporter.cni_exporter_port",
		"subnet_caching.cache_time", "nodes_caching.caching",
	} {
		if !slices.Contains(unknown, u) {
			t.Errorf("Unknown() lacks %s: %q", u, unknown)
		}
	}
	for _, known := range []string{"neutron.valid_interfaces", "binding.driver", "cni_health_server.max_memory_usage"} {
		if slices.Contains(unknown, known) {
			t.Errorf("Unknown() lists %s, which is recognised", known)
		}
	}
}
