// Package etcdgw is the little of etcd's v3 API the Go test peers need, spoken through etcd's
// JSON gateway (the grpc-gateway etcd serves on its client port: POST /v3/<service>/<method>
// with a JSON body, bytes as base64, int64s as decimal strings) over net/http: a prefix range,
// and a key kept under a lease the way kratos's etcd registry keeps a registration (grant,
// put with the lease, keep-alive, revoke).
//
// Why not etcd's Go client: Debian ships it only inside golang-etcd-server-dev, etcd 3.4's
// whole server tree, which pulls in some forty more -dev packages (zap, grpc-gateway,
// prometheus, cobra, bbolt, …); the peers are built offline from a handful of packages, and
// the gateway is part of every etcd the suites start (3.4 from Debian, 3.5 upstream).
package etcdgw

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/ioutil"
	"net/http"
	"strconv"
	"time"
)

// Client talks to one etcd member at Endpoint (`http://host:port`).
type Client struct {
	Endpoint string
	HTTP     *http.Client
}

// New returns a client of the member at endpoint whose calls give up after 5 s.
func New(endpoint string) *Client {
	return &Client{Endpoint: endpoint, HTTP: &http.Client{Timeout: 5 * time.Second}}
}

// KV is one key and its value.
type KV struct {
	Key   string
	Value []byte
	Lease int64
}

func b64(s []byte) string { return base64.StdEncoding.EncodeToString(s) }

// call POSTs request as JSON to /v3/<path> and decodes the answer into response.
func (c *Client) call(path string, request, response interface{}) error {
	body, err := json.Marshal(request)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Post(c.Endpoint+"/v3/"+path, "application/json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("etcd %s: %w", path, err)
	}
	defer resp.Body.Close()
	answer, err := ioutil.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("etcd %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: %s: %s", path, resp.Status, answer)
	}
	if err := json.Unmarshal(answer, response); err != nil {
		return fmt.Errorf("etcd %s: %w in %s", path, err, answer)
	}
	return nil
}

// int64s come as decimal strings (proto3 JSON); a missing one is 0.
func parseInt(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	return strconv.ParseInt(s, 10, 64)
}

// Prefix returns every key that starts with prefix.
func (c *Client) Prefix(prefix string) ([]KV, error) {
	end := []byte(prefix)
	// The range end of a prefix: the prefix with its last byte incremented (etcd's rule).
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			end = end[:i+1]
			break
		}
	}
	var resp struct {
		Kvs []struct {
			Key   string `json:"key"`
			Value string `json:"value"`
			Lease string `json:"lease"`
		} `json:"kvs"`
	}
	if err := c.call("kv/range", map[string]string{"key": b64([]byte(prefix)), "range_end": b64(end)}, &resp); err != nil {
		return nil, err
	}
	kvs := make([]KV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		key, err := base64.StdEncoding.DecodeString(kv.Key)
		if err != nil {
			return nil, fmt.Errorf("etcd kv/range: key: %w", err)
		}
		value, err := base64.StdEncoding.DecodeString(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("etcd kv/range: value of %s: %w", key, err)
		}
		lease, err := parseInt(kv.Lease)
		if err != nil {
			return nil, fmt.Errorf("etcd kv/range: lease of %s: %w", key, err)
		}
		kvs = append(kvs, KV{Key: string(key), Value: value, Lease: lease})
	}
	return kvs, nil
}

// Grant creates a lease of ttl seconds and returns its id.
func (c *Client) Grant(ttl int64) (int64, error) {
	var resp struct {
		ID string `json:"ID"`
	}
	if err := c.call("lease/grant", map[string]string{"TTL": strconv.FormatInt(ttl, 10)}, &resp); err != nil {
		return 0, err
	}
	id, err := parseInt(resp.ID)
	if err == nil && id == 0 {
		err = fmt.Errorf("etcd lease/grant: no lease id")
	}
	return id, err
}

// Put sets key to value under lease.
func (c *Client) Put(key string, value []byte, lease int64) error {
	var resp struct{}
	return c.call("kv/put", map[string]string{
		"key": b64([]byte(key)), "value": b64(value), "lease": strconv.FormatInt(lease, 10),
	}, &resp)
}

// KeepAlive renews lease once and returns its TTL afterwards: 0 when the lease is gone.
func (c *Client) KeepAlive(lease int64) (int64, error) {
	// The gateway serves the keep-alive stream one request per POST: its answers come wrapped
	// in "result".
	var resp struct {
		Result struct {
			TTL string `json:"TTL"`
		} `json:"result"`
	}
	if err := c.call("lease/keepalive", map[string]string{"ID": strconv.FormatInt(lease, 10)}, &resp); err != nil {
		return 0, err
	}
	return parseInt(resp.Result.TTL)
}

// Revoke ends lease, deleting the keys under it.
func (c *Client) Revoke(lease int64) error {
	var resp struct{}
	return c.call("lease/revoke", map[string]string{"ID": strconv.FormatInt(lease, 10)}, &resp)
}
