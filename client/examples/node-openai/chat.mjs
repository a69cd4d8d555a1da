// An app written against OpenAI's Node SDK, pointed at the gateway's HTTP door by two
// settings and no change of code:
//
//   OPENAI_BASE_URL=http://127.0.0.1:50080/v1 OPENAI_API_KEY=demo-key node chat.mjs "hello"
//
// It streams the answer to stdout and prints the usage (or the error) on stderr.
import OpenAI from "openai";

const args = process.argv.slice(2);
let model = "sim-gpt";
const words = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--model") {
    model = args[++i];
  } else {
    words.push(args[i]);
  }
}

// The base URL and the key come from OPENAI_BASE_URL and OPENAI_API_KEY.
const client = new OpenAI({ maxRetries: 0 });
try {
  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: words.join(" ") }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let usage = null;
  for await (const chunk of stream) {
    const text = chunk.choices[0]?.delta?.content;
    if (text) {
      process.stdout.write(text);
    }
    if (chunk.usage) {
      usage = chunk.usage;
    }
  }
  process.stdout.write("\n");
  console.error(
    `usage: prompt=${usage.prompt_tokens} completion=${usage.completion_tokens} total=${usage.total_tokens}`,
  );
} catch (error) {
  console.error(`error: ${error.status ?? "-"} ${error.constructor.name}: ${error.message}`);
  process.exit(1);
}
