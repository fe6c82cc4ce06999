package config

import (
	"maps"
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("Default().Warnings() = %q, want none", w)
	}
	// kuryr's defaults (kuryr-behaviour.md §1) and ours for the new options.
	checks := []struct {
		name      string
		got, want any
	}{
		{"vif_pool_driver", c.Kubernetes.VIFPoolDriver, "noop"},
		{"pod_vif_driver", c.Kubernetes.PodVIFDriver, "neutron-vif"},
		{"enabled_handlers", strings.Join(c.Kubernetes.EnabledHandlers, ","), "vif,endpoints,service,kuryrloadbalancer,kuryrport"},
		{"ports_pool_max", c.VIFPool.PortsPoolMax, 0},
		{"ports_pool_min", c.VIFPool.PortsPoolMin, 5},
		{"ports_pool_batch", c.VIFPool.PortsPoolBatch, 10},
		{"ports_pool_update_frequency", c.VIFPool.PortsPoolUpdateFrequency, 20 * time.Second},
		{"ports_pool_cooldown", c.VIFPool.PortsPoolCooldown, time.Duration(0)},
		{"ports_pool_idle_timeout", c.VIFPool.PortsPoolIdleTimeout, time.Duration(0)},
		{"sock_file", c.PoolManager.SockFile, "/run/kuryr/kuryr_manage.sock"},
		{"binding driver", c.Binding.Driver, "kuryr.lib.binding.drivers.veth"},
		{"bind_address", c.CNIDaemon.BindAddress, "127.0.0.1:5036"},
		{"vif_annotation_timeout", c.CNIDaemon.VIFAnnotationTimeout, 60 * time.Second},
		{"socket_path", c.CNIDaemon.SocketPath, "/run/kuryr/cni.sock"},
		{"pool_wait_timeout", c.CNIDaemon.PoolWaitTimeout, 30 * time.Second},
		{"checkpoint_path", c.CNIDaemon.CheckpointPath, "/var/lib/kuryr/checkpoint.json"},
		{"metrics_address", c.CNIDaemon.MetricsAddress, "127.0.0.1:9655"},
		{"health_address", c.CNIHealthServer.HealthAddress, "127.0.0.1:8090"},
		{"auth_type", c.Neutron.AuthType, "password"},
		{"qps", c.Neutron.QPS, 20.0},
		{"burst", c.Neutron.Burst, 40},
		{"max_concurrent_requests", c.Neutron.MaxConcurrentRequests, 8},
		{"cluster_name", c.Kubernetes.ClusterName, "kubernetes"},
		{"default_vif_type", c.Binding.DefaultVIFType, "ovs"},
		{"cache_time", c.NodeDriverCaching.CacheTime, time.Hour},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("default %s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
		want   []string // substrings of the error; none means valid
	}{
		{"defaults", func(c *Config) {}, nil},
		{"neutron pools", func(c *Config) { c.Kubernetes.VIFPoolDriver = "neutron" }, nil},
		{"nested pools", func(c *Config) {
			c.Kubernetes.VIFPoolDriver, c.Kubernetes.PodVIFDriver = "nested", "nested-vlan"
			c.PodVIFNested.WorkerNodesSubnets = []string{"subnet-1"}
		}, nil},
		{"nested pool needs worker_nodes_subnets", func(c *Config) {
			c.Kubernetes.VIFPoolDriver, c.Kubernetes.PodVIFDriver = "nested", "nested-vlan"
		}, []string{`[pod_vif_nested] worker_nodes_subnets = "": required for nested pods`}},
		{"nested-vlan without pools needs worker_nodes_subnets", func(c *Config) {
			c.Kubernetes.PodVIFDriver = "nested-vlan"
		}, []string{"[pod_vif_nested] worker_nodes_subnets"}},
		{"mapping with nested needs worker_nodes_subnets", func(c *Config) {
			c.VIFPool.VIFPoolMapping = map[string]string{"nested-vlan": "nested", "neutron-vif": "neutron"}
		}, []string{"[pod_vif_nested] worker_nodes_subnets"}},
		{"mapping without nested does not", func(c *Config) {
			c.VIFPool.VIFPoolMapping = map[string]string{"neutron-vif": "neutron"}
		}, nil},
		{"nested pool serving neutron-vif", func(c *Config) {
			c.Kubernetes.VIFPoolDriver = "nested"
			c.PodVIFNested.WorkerNodesSubnets = []string{"s"}
		}, []string{`[kubernetes] vif_pool_driver = "nested": a nested pool cannot serve pod VIF driver neutron-vif`}},
		{"nested-macvlan unsupported", func(c *Config) { c.Kubernetes.PodVIFDriver = "nested-macvlan" },
			[]string{`[kubernetes] pod_vif_driver = "nested-macvlan": kuryr's nested-macvlan driver is not supported here`}},
		{"nested-dpdk unsupported", func(c *Config) { c.Kubernetes.PodVIFDriver = "nested-dpdk" },
			[]string{`pod_vif_driver = "nested-dpdk"`, "not supported"}},
		{"unsupported pod driver in the mapping", func(c *Config) {
			c.VIFPool.VIFPoolMapping = map[string]string{"neutron-vif": "neutron", "nested-macvlan": "noop"}
		}, []string{`[vif_pool] vif_pool_mapping = "nested-macvlan:noop,neutron-vif:neutron": kuryr's nested-macvlan driver is not supported`}},
		{"min above max", func(c *Config) { c.VIFPool.PortsPoolMin, c.VIFPool.PortsPoolMax = 10, 5 },
			[]string{`[vif_pool] ports_pool_min = "10": must not exceed ports_pool_max (5)`}},
		{"min above unlimited max", func(c *Config) { c.VIFPool.PortsPoolMin, c.VIFPool.PortsPoolMax = 100, 0 }, nil},
		{"min equal max", func(c *Config) { c.VIFPool.PortsPoolMin, c.VIFPool.PortsPoolMax = 5, 5 }, nil},
		{"batch above max is only a warning", func(c *Config) { c.VIFPool.PortsPoolBatch, c.VIFPool.PortsPoolMax = 20, 10 }, nil},
		{"negative sizes", func(c *Config) { c.VIFPool.PortsPoolMin, c.VIFPool.PortsPoolMax = -1, -2 },
			[]string{`ports_pool_min = "-1": must not be negative`, `ports_pool_max = "-2": must not be negative`}},
		{"zero batch", func(c *Config) { c.VIFPool.PortsPoolBatch = 0 }, []string{`ports_pool_batch = "0": must be greater than 0`}},
		{"zero update frequency", func(c *Config) { c.VIFPool.PortsPoolUpdateFrequency = 0 },
			[]string{`[vif_pool] ports_pool_update_frequency = "0": must be greater than 0`}},
		{"sub-second update frequency set in code", func(c *Config) { c.VIFPool.PortsPoolUpdateFrequency = 100 * time.Millisecond }, nil},
		{"negative cooldown", func(c *Config) { c.VIFPool.PortsPoolCooldown = -time.Second }, []string{"ports_pool_cooldown", "must not be negative"}},
		{"qps zero", func(c *Config) { c.Neutron.QPS = 0 }, []string{`[neutron] qps = "0": must be greater than 0`}},
		{"bad enum in code", func(c *Config) { c.Kubernetes.PodSubnetsDriver = "x" }, []string{"[kubernetes] pod_subnets_driver"}},
		{"bad address in code", func(c *Config) { c.CNIDaemon.MetricsAddress = "nohost" }, []string{"[cni_daemon] metrics_address"}},
		{"pprof on loopback", func(c *Config) { c.CNIDaemon.Pprof = true }, nil},
		{"pprof on ::1", func(c *Config) { c.CNIDaemon.Pprof, c.CNIDaemon.MetricsAddress = true, "[::1]:9655" }, nil},
		{"pprof on localhost", func(c *Config) { c.CNIDaemon.Pprof, c.CNIDaemon.MetricsAddress = true, "localhost:9655" }, nil},
		{"pprof on every address", func(c *Config) { c.CNIDaemon.Pprof, c.CNIDaemon.MetricsAddress = true, ":9655" },
			[]string{"[cni_daemon] pprof", "loopback"}},
		{"pprof on a node address", func(c *Config) { c.CNIDaemon.Pprof, c.CNIDaemon.MetricsAddress = true, "10.0.0.5:9655" },
			[]string{"[cni_daemon] pprof", "loopback"}},
		{"pprof without metrics", func(c *Config) { c.CNIDaemon.Pprof, c.CNIDaemon.MetricsAddress = true, "" },
			[]string{"[cni_daemon] pprof", "loopback"}},
		{"auth none needs endpoint_override", func(c *Config) { c.Neutron.AuthType = "none" },
			[]string{`[neutron] endpoint_override = "": required when auth_type = none`}},
		{"auth none with endpoint_override", func(c *Config) {
			c.Neutron.AuthType, c.Neutron.EndpointOverride = "none", "http://127.0.0.1:9696"
		}, nil},
		{"password auth complete", func(c *Config) {
			n := &c.Neutron
			n.AuthURL, n.Username, n.Password, n.ProjectName = "http://keystone/v3", "kuryr", "pw", "k8s"
		}, nil},
		{"password auth with user_id", func(c *Config) {
			n := &c.Neutron
			n.AuthURL, n.UserID, n.Password = "http://keystone/v3", "uid", "pw"
		}, nil},
		{"password auth without user", func(c *Config) {
			c.Neutron.AuthURL, c.Neutron.Password = "http://keystone/v3", "pw"
		}, []string{`[neutron] username = "": username or user_id is required with auth_type = password`}},
		{"password auth without password", func(c *Config) {
			c.Neutron.AuthType, c.Neutron.AuthURL, c.Neutron.Username = "v3password", "http://keystone/v3", "u"
		}, []string{`[neutron] password = "": required with auth_type = v3password`}},
		{"credentials without auth_url", func(c *Config) { c.Neutron.Username, c.Neutron.Password = "u", "p" },
			[]string{`[neutron] auth_url = "": required with credentials`}},
		{"clouds.yaml provides the rest", func(c *Config) { c.Neutron.Cloud, c.Neutron.Username = "openstack", "u" }, nil},
		{"application credential by id", func(c *Config) {
			n := &c.Neutron
			n.AuthType, n.AuthURL, n.ApplicationCredentialID, n.ApplicationCredentialSecret = "v3applicationcredential", "https://k/v3", "id", "s"
		}, nil},
		{"application credential by name and user", func(c *Config) {
			n := &c.Neutron
			n.AuthType, n.AuthURL, n.ApplicationCredentialName, n.Username, n.ApplicationCredentialSecret = "applicationcredential", "https://k/v3", "ac", "u", "s"
		}, nil},
		{"application credential incomplete", func(c *Config) {
			n := &c.Neutron
			n.AuthType, n.AuthURL, n.ApplicationCredentialName = "applicationcredential", "https://k/v3", "ac"
		}, []string{"[neutron] application_credential_secret", "[neutron] application_credential_id"}},
		{"manager needs a socket", func(c *Config) { c.Kubernetes.EnableManager, c.PoolManager.SockFile = true, "" },
			[]string{`[pool_manager] sock_file = "": required when [kubernetes] enable_manager is true`}},
		{"bridge needs a bridge name", func(c *Config) { c.Binding.DefaultVIFType, c.Binding.LinuxBridge = "bridge", "" },
			[]string{`[binding] linux_bridge = "": required when default_vif_type = bridge`}},
		{"multi_pool needs a mapping", func(c *Config) { c.Kubernetes.VIFPoolDriver = "multi_pool" },
			[]string{`[kubernetes] vif_pool_driver = "multi_pool": needs [vif_pool] vif_pool_mapping`}},
		{"multi_pool with a mapping", func(c *Config) {
			c.Kubernetes.VIFPoolDriver = "multi_pool"
			c.VIFPool.VIFPoolMapping = map[string]string{"neutron-vif": "neutron"}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.modify(c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestPoolMapping(t *testing.T) {
	tests := []struct {
		name    string
		modify  func(c *Config)
		want    map[string]string
		wantErr string
	}{
		{"default: pod_vif_driver to vif_pool_driver", func(c *Config) {}, map[string]string{"neutron-vif": "noop"}, ""},
		{"single driver", func(c *Config) { c.Kubernetes.VIFPoolDriver = "neutron" }, map[string]string{"neutron-vif": "neutron"}, ""},
		{"vif_pool_mapping", func(c *Config) {
			c.VIFPool.VIFPoolMapping = map[string]string{"nested-vlan": "nested", "neutron-vif": "neutron"}
		}, map[string]string{"nested-vlan": "nested", "neutron-vif": "neutron"}, ""},
		{"pools_vif_drivers inverted", func(c *Config) {
			c.VIFPool.PoolsVIFDrivers = map[string]string{"nested": "nested-vlan", "neutron": "neutron-vif"}
		}, map[string]string{"nested-vlan": "nested", "neutron-vif": "neutron"}, ""},
		{"vif_pool_mapping wins over pools_vif_drivers", func(c *Config) {
			c.VIFPool.VIFPoolMapping = map[string]string{"neutron-vif": "neutron"}
			c.VIFPool.PoolsVIFDrivers = map[string]string{"nested": "nested-vlan"}
		}, map[string]string{"neutron-vif": "neutron"}, ""},
		{"noop serves any pod driver", func(c *Config) {
			c.VIFPool.VIFPoolMapping = map[string]string{"nested-vlan": "noop", "neutron-vif": "noop", "nested-macvlan": "noop", "nested-dpdk": "noop"}
		}, map[string]string{"nested-vlan": "noop", "neutron-vif": "noop", "nested-macvlan": "noop", "nested-dpdk": "noop"}, ""},
		{"neutron only with neutron-vif", func(c *Config) {
			c.VIFPool.VIFPoolMapping = map[string]string{"nested-vlan": "neutron"}
		}, nil, `[vif_pool] vif_pool_mapping = "nested-vlan:neutron": a neutron pool cannot serve pod VIF driver nested-vlan (neutron pools serve neutron-vif)`},
		{"nested only with nested-vlan", func(c *Config) {
			c.VIFPool.VIFPoolMapping = map[string]string{"nested-macvlan": "nested"}
		}, nil, "a nested pool cannot serve pod VIF driver nested-macvlan"},
		{"unknown pool driver", func(c *Config) {
			c.VIFPool.VIFPoolMapping = map[string]string{"neutron-vif": "multi_pool"}
		}, nil, `unknown pool driver "multi_pool" for pod VIF driver neutron-vif`},
		{"bad pair in the deprecated option", func(c *Config) {
			c.VIFPool.PoolsVIFDrivers = map[string]string{"neutron": "nested-vlan"}
		}, nil, `[vif_pool] pools_vif_drivers = "neutron:nested-vlan": a neutron pool cannot serve`},
		{"two pools for one pod driver", func(c *Config) {
			c.VIFPool.PoolsVIFDrivers = map[string]string{"nested": "nested-vlan", "noop": "nested-vlan"}
		}, nil, "pod VIF driver nested-vlan is mapped to two pool drivers, nested and noop"},
		{"mismatched single driver", func(c *Config) { c.Kubernetes.VIFPoolDriver = "neutron"; c.Kubernetes.PodVIFDriver = "nested-vlan" },
			nil, `[kubernetes] vif_pool_driver = "neutron": a neutron pool cannot serve pod VIF driver nested-vlan`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.modify(c)
			got, err := c.PoolMapping()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("PoolMapping() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("PoolMapping() = %v", err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("PoolMapping() = %v, want %v", got, tt.want)
			}
			// The result is the caller's to keep.
			got["x"] = "y"
			if _, leaked := c.VIFPool.VIFPoolMapping["x"]; leaked {
				t.Error("PoolMapping() returned the Config's own map")
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		name string
		conf string
		want []string // each must appear in some warning; none means no warnings
	}{
		{"none", "[vif_pool]\nports_pool_max = 10\nports_pool_batch = 5", nil},
		{"batch above max", "[vif_pool]\nports_pool_max = 10\nports_pool_batch = 20",
			[]string{"[vif_pool] ports_pool_batch = 20 is larger than ports_pool_max = 10: this value should be smaller than the ports_pool_max"}},
		{"batch above unlimited max", "[vif_pool]\nports_pool_max = 0\nports_pool_batch = 20", nil},
		{"pools_vif_drivers deprecated", "[vif_pool]\npools_vif_drivers = nested:nested-vlan,neutron:neutron-vif",
			[]string{"[vif_pool] pools_vif_drivers is deprecated: write the inverse mapping as vif_pool_mapping = nested-vlan:nested,neutron-vif:neutron"}},
		{"pools_vif_drivers ignored", "[vif_pool]\npools_vif_drivers = nested:nested-vlan\nvif_pool_mapping = neutron-vif:neutron",
			[]string{"pools_vif_drivers is deprecated and ignored because vif_pool_mapping is set"}},
		{"binding driver deprecated", "[binding]\ndriver = kuryr.lib.binding.drivers.vlan",
			[]string{"[binding] driver is deprecated: use default_driver"}},
		{"both binding names", "[binding]\ndriver = a\ndefault_driver = b",
			[]string{"[binding] driver is a deprecated name of default_driver and is ignored because default_driver is set"}},
		{"worker_nodes_subnet deprecated", "[pod_vif_nested]\nworker_nodes_subnet = s",
			[]string{"[pod_vif_nested] worker_nodes_subnet is deprecated: use worker_nodes_subnets"}},
		{"misplaced in DEFAULT", "[DEFAULT]\nports_pool_min = 3",
			[]string{"[DEFAULT] ports_pool_min is not a [DEFAULT] option and has no effect there; did you mean [vif_pool] ports_pool_min?"}},
		{"empty scalar", "[vif_pool]\nports_pool_min =", []string{`[vif_pool] ports_pool_min is empty: using the default "5"`}},
		{"health port ignored", "[cni_health_server]\nport = 8091\nhealth_address = 127.0.0.1:9000",
			[]string{"[cni_health_server] port = 8091 is ignored because health_address"}},
		{"health port agrees", "[cni_health_server]\nport = 9000\nhealth_address = 127.0.0.1:9000", nil},
		{"several valid_interfaces", "[neutron]\nvalid_interfaces = internal, public",
			[]string{"only the first interface, internal, is used"}},
		{"mapping misses pod_vif_driver", "[vif_pool]\nvif_pool_mapping = nested-vlan:nested",
			[]string{"the pool mapping has no entry for [kubernetes] pod_vif_driver = neutron-vif"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := mustParse(t, tt.conf).Warnings()
			if len(tt.want) == 0 && len(w) != 0 {
				t.Fatalf("Warnings() = %q, want none", w)
			}
			for _, want := range tt.want {
				found := false
				for _, got := range w {
					found = found || strings.Contains(got, want)
				}
				if !found {
					t.Errorf("Warnings() = %q\nwant one containing %q", w, want)
				}
			}
		})
	}
}

func TestHasHandler(t *testing.T) {
	tests := []struct {
		handlers   string
		name       string
		want       bool
		population bool
	}{
		{"vif,endpoints,service,kuryrloadbalancer,kuryrport", "kuryrport", true, false},
		{"vif,endpoints,service,kuryrloadbalancer,kuryrport", "namespace", false, false},
		{"vif,namespace,kuryrnetwork,kuryrnetwork_population", "kuryrnetwork_population", true, true},
		{"vif,namespace,kuryrnetwork", "kuryrnetwork_population", false, false},
		// The ports-pool guide's glob spelling.
		{"vif,lb,lbaasspec,namespace,*kuryrnet*", "kuryrnetwork", true, true},
		{"vif,lb,lbaasspec,namespace,*kuryrnet*", "kuryrnetwork_population", true, true},
		{"vif,lb,lbaasspec,namespace,*kuryrnet*", "vif", true, true},
		{"vif,lb,lbaasspec,namespace,*kuryrnet*", "kuryrport", false, true},
		// The handler name of older kuryr releases.
		{"vif,namespace,kuryrnet", "kuryrnetwork_population", true, true},
		{"vif,[bad", "vif", true, false},
		{"", "vif", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.handlers+"/"+tt.name, func(t *testing.T) {
			k := KubernetesSection{EnabledHandlers: splitList(tt.handlers)}
			if got := k.HasHandler(tt.name); got != tt.want {
				t.Errorf("HasHandler(%q) = %v, want %v", tt.name, got, tt.want)
			}
			if got := k.PopulationEnabled(); got != tt.population {
				t.Errorf("PopulationEnabled() = %v, want %v", got, tt.population)
			}
		})
	}
}
