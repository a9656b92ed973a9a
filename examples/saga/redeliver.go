package main

import (
	"context"
	"fmt"
	"time"

	"github.com/IBM/sarama"

	"github.com/outboxrelay/outboxrelay/inbox"
)

// redeliver produces again, unchanged (key, value, headers), the first
// records of topic: the duplicate deliveries a consumer must expect from
// any producer or broker retry, injected on purpose.
func redeliver(ctx context.Context, e *env, topic string, n int) error {
	cfg := e.kafka()
	client, err := sarama.NewClient([]string{e.brokers}, cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return err
	}
	defer consumer.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		return err
	}
	var copies []*sarama.ProducerMessage
	for _, p := range parts {
		if len(copies) == n {
			break
		}
		end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil || end == 0 {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			return err
		}
		for len(copies) < n {
			var m *sarama.ConsumerMessage
			select {
			case m = <-pc.Messages():
			case <-time.After(5 * time.Second):
			case <-ctx.Done():
			}
			if m == nil {
				break
			}
			c := &sarama.ProducerMessage{Topic: topic, Key: sarama.ByteEncoder(m.Key), Value: sarama.ByteEncoder(m.Value)}
			for _, h := range m.Headers {
				c.Headers = append(c.Headers, sarama.RecordHeader{Key: h.Key, Value: h.Value})
			}
			copies = append(copies, c)
			fmt.Printf("redelivering %s/%d@%d key=%s id=%s type=%s\n", topic, m.Partition, m.Offset, m.Key, header(m, inbox.HeaderID), header(m, inbox.HeaderType))
			if m.Offset+1 >= end {
				break
			}
		}
		pc.Close()
	}
	if len(copies) < n {
		return fmt.Errorf("topic %s has only %d records, want %d", topic, len(copies), n)
	}
	prod, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		return err
	}
	defer prod.Close()
	return prod.SendMessages(copies)
}
