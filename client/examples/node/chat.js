#!/usr/bin/env node
// A Node.js client for the ai-service gateway, from the same .proto as every other client.
//
//   AI_SERVICE_ADDR=127.0.0.1:50051 AI_SERVICE_KEY=demo-key node chat.js "hello" [--model M] [--stream]
//
// Prints the answer (or, with --stream, the tokens as they arrive) on stdout and the
// token usage on stderr. A failed call prints one line `error: <CODE>: <details>` and
// exits 1. The channel uses ../../service_config.json, the same gRPC service config as
// the Python client: gRPC itself retries UNAVAILABLE and sets per-method deadlines.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_PATH = path.join(__dirname, '..', '..', '..', 'protos', 'ai_service.proto');
const SERVICE_CONFIG_PATH = path.join(__dirname, '..', '..', 'service_config.json');

function loadService() {
  const definition = protoLoader.loadSync(PROTO_PATH, {
    keepCase: true, // field names as in the proto (and the JSON grpcurl takes): finish_reason
    longs: String, // int64/uint64 (created, sequence) as strings, never a lossy number
    enums: String,
    defaults: true, // unset fields read as their zero value, as in every other gRPC language
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).ai_service.v1.AIService;
}

function connect(AIService) {
  const address = process.env.AI_SERVICE_ADDR || '127.0.0.1:50051';
  return new AIService(address, grpc.credentials.createInsecure(), {
    'grpc.service_config': fs.readFileSync(SERVICE_CONFIG_PATH, 'utf8'),
    'grpc.primary_user_agent': 'ai-service-node-example',
  });
}

function authMetadata() {
  const metadata = new grpc.Metadata();
  const key = process.env.AI_SERVICE_KEY;
  if (key) metadata.set('authorization', `Bearer ${key}`);
  return metadata;
}

// The unary RPCs as promises.
function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, authMetadata(), (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

// The model to use: --model, else AI_SERVICE_MODEL, else the first one the key may use.
async function chooseModel(client, model) {
  if (model) return model;
  if (process.env.AI_SERVICE_MODEL) return process.env.AI_SERVICE_MODEL;
  const { models } = await unary(client, 'ListModels', {});
  if (models.length === 0) throw new Error('the gateway lists no models for this key; pass --model');
  return models[0].id;
}

async function chat(client, request) {
  const response = await unary(client, 'ChatCompletion', request);
  const [choice] = response.choices;
  process.stdout.write(`${choice ? choice.message.content : ''}\n`);
  return response.usage;
}

function streamChat(client, request) {
  return new Promise((resolve, reject) => {
    let usage = null;
    const call = client.StreamChatCompletion(request, authMetadata());
    call.on('data', (chunk) => {
      for (const choice of chunk.choices) process.stdout.write(choice.delta.content);
      if (chunk.usage) usage = chunk.usage; // only the last chunk carries it
    });
    call.on('end', () => {
      process.stdout.write('\n');
      resolve(usage);
    });
    call.on('error', reject);
  });
}

function describeError(error) {
  if (typeof error.code === 'number' && grpc.status[error.code] !== undefined) {
    return `${grpc.status[error.code]}: ${error.details}`;
  }
  return error.message;
}

async function main() {
  let args;
  try {
    args = parseArgs({
      allowPositionals: true,
      options: { model: { type: 'string' }, stream: { type: 'boolean', default: false } },
    });
  } catch (error) {
    console.error(`error: ${error.message}`);
    return 2;
  }
  if (args.positionals.length !== 1) {
    console.error('usage: node chat.js "prompt" [--model M] [--stream]');
    return 2;
  }

  const client = connect(loadService());
  try {
    const request = {
      model: await chooseModel(client, args.values.model),
      messages: [{ role: 'user', content: args.positionals[0] }],
    };
    const usage = await (args.values.stream ? streamChat : chat)(client, request);
    if (usage) {
      console.error(
        `usage: prompt=${usage.prompt_tokens} completion=${usage.completion_tokens}` +
          ` total=${usage.total_tokens}`,
      );
    }
    return 0;
  } catch (error) {
    console.error(`error: ${describeError(error)}`);
    return 1;
  } finally {
    client.close();
  }
}

main().then((code) => {
  process.exitCode = code;
});
