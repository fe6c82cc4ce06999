package agent

// PlugParams is how an attachment was plugged, kept in the checkpoint so that DEL and CHECK work
// from local state alone.
type PlugParams struct {
	Mode       string   `json:"mode"` // vlan | ovs | bridge
	MAC        string   `json:"mac"`
	MTU        int      `json:"mtu"`
	Addresses  []string `json:"addresses"` // CIDR notation: the port IP with the subnet prefix length
	Gateway    string   `json:"gateway,omitempty"`
	Routes     []Route  `json:"routes,omitempty"`
	VLAN       int      `json:"vlan,omitempty"`
	Parent     string   `json:"parent,omitempty"`
	Bridge     string   `json:"bridge,omitempty"`
	HostIfName string   `json:"hostIfName,omitempty"`
}

// Route is a subnet host route.
type Route struct {
	Dst string `json:"dst"`
	GW  string `json:"gw"`
}
