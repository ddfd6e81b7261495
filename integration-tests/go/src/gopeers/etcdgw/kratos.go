package etcdgw

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Instance is a service instance as kratos's etcd registry stores it: the JSON value of the key
// /microservices/<name>/<id>.
type Instance struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Version   string            `json:"version"`
	Metadata  map[string]string `json:"metadata"`
	Endpoints []string          `json:"endpoints"`
}

// Key is the instance's key in the kratos layout.
func (i *Instance) Key() string { return ServicePrefix(i.Name) + i.ID }

// ServicePrefix is the prefix under which kratos keeps the instances of service name.
func ServicePrefix(name string) string { return "/microservices/" + name + "/" }

// GRPCAddress is the `host:port` of the instance's grpc:// endpoint, the address kratos's gRPC
// resolver dials (and the one a gateway route names).
func (i *Instance) GRPCAddress() (string, error) {
	for _, e := range i.Endpoints {
		if strings.HasPrefix(e, "grpc://") {
			return strings.TrimPrefix(e, "grpc://"), nil
		}
	}
	return "", fmt.Errorf("instance %s of %s has no grpc:// endpoint: %v", i.ID, i.Name, i.Endpoints)
}

// Instances returns every registered instance of service name.
func (c *Client) Instances(name string) ([]Instance, error) {
	kvs, err := c.Prefix(ServicePrefix(name))
	if err != nil {
		return nil, err
	}
	instances := make([]Instance, 0, len(kvs))
	for _, kv := range kvs {
		var i Instance
		if err := json.Unmarshal(kv.Value, &i); err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		instances = append(instances, i)
	}
	return instances, nil
}
