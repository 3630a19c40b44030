"""The server the MCP conformance suite's server scenarios expect
(`@modelcontextprotocol/conformance` 0.1.16: its tools, resources and prompts
`test_*`), over stdio, on the official Python SDK 1.x (`venv-sdk1`, the SDK
mcp-proxy bridges with). Written from the scenarios' descriptions; each
handler returns what its scenario checks for."""

import asyncio
import base64
import json

import mcp.types as types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.stdio import stdio_server

# A 1x1 red PNG and a 1-sample 8 kHz mono WAV: the smallest real files.
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
WAV = base64.b64encode(
    b"RIFF" + (37).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
    + (8000).to_bytes(4, "little") + (1).to_bytes(2, "little") + (8).to_bytes(2, "little")
    + b"data" + (1).to_bytes(4, "little") + b"\x80"
).decode()

NO_ARGS = {"type": "object", "properties": {}}
SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}


def text_arg(name: str, what: str) -> dict:
    return {"type": "object", "properties": {name: {"type": "string", "description": what}}, "required": [name]}


TOOLS = [
    types.Tool(name="test_simple_text", description="Returns simple text content", inputSchema=NO_ARGS),
    types.Tool(name="test_image_content", description="Returns image content", inputSchema=NO_ARGS),
    types.Tool(name="test_audio_content", description="Returns audio content", inputSchema=NO_ARGS),
    types.Tool(name="test_embedded_resource", description="Returns an embedded resource", inputSchema=NO_ARGS),
    types.Tool(
        name="test_multiple_content_types", description="Returns text, image and resource content", inputSchema=NO_ARGS
    ),
    types.Tool(name="test_tool_with_logging", description="Sends log messages while it runs", inputSchema=NO_ARGS),
    types.Tool(name="test_tool_with_progress", description="Reports progress while it runs", inputSchema=NO_ARGS),
    types.Tool(name="test_error_handling", description="Always fails", inputSchema=NO_ARGS),
    types.Tool(
        name="test_sampling",
        description="Asks the client's LLM to answer a prompt",
        inputSchema=text_arg("prompt", "The prompt to send to the LLM"),
    ),
    types.Tool(
        name="test_elicitation",
        description="Asks the user for a name and an email address",
        inputSchema=text_arg("message", "The message to show the user"),
    ),
    types.Tool(
        name="test_elicitation_sep1034_defaults",
        description="Asks the user with a form whose fields have defaults",
        inputSchema=NO_ARGS,
    ),
    types.Tool(
        name="test_elicitation_sep1330_enums",
        description="Asks the user with a form of the five enum kinds",
        inputSchema=NO_ARGS,
    ),
    types.Tool(
        name="json_schema_2020_12_tool", description="Tool with JSON Schema 2020-12 features", inputSchema=SCHEMA_2020_12
    ),
    types.Tool(name="test_reconnection", description="Answers after a pause (SSE polling)", inputSchema=NO_ARGS),
]

DEFAULTS_FORM = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
}

ENUMS_FORM = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {
            "type": "string",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
}

app = Server("mcpwatch-conformance-server")


def text(t: str) -> types.TextContent:
    return types.TextContent(type="text", text=t)


async def elicit(message: str, schema: dict) -> types.ElicitResult:
    """`elicitation/create` with a schema the SDK's typed helper would narrow."""
    ctx = app.request_context
    return await ctx.session.send_request(
        types.ServerRequest(
            types.ElicitRequest(
                method="elicitation/create",
                params=types.ElicitRequestParams(message=message, requestedSchema=schema),
            )
        ),
        types.ElicitResult,
    )


@app.list_tools()
async def list_tools() -> list[types.Tool]:
    return TOOLS


@app.call_tool(validate_input=False)
async def call_tool(name: str, args: dict) -> list:
    ctx = app.request_context
    if name == "test_simple_text":
        return [text("This is a simple text response for testing.")]
    if name == "test_image_content":
        return [types.ImageContent(type="image", data=PNG, mimeType="image/png")]
    if name == "test_audio_content":
        return [types.AudioContent(type="audio", data=WAV, mimeType="audio/wav")]
    if name == "test_embedded_resource":
        return [
            types.EmbeddedResource(
                type="resource",
                resource=types.TextResourceContents(
                    uri="test://embedded-resource", mimeType="text/plain", text="This is an embedded resource content."
                ),
            )
        ]
    if name == "test_multiple_content_types":
        return [
            text("Multiple content types test:"),
            types.ImageContent(type="image", data=PNG, mimeType="image/png"),
            types.EmbeddedResource(
                type="resource",
                resource=types.TextResourceContents(
                    uri="test://mixed-content-resource",
                    mimeType="application/json",
                    text=json.dumps({"test": "data", "value": 123}),
                ),
            ),
        ]
    if name == "test_tool_with_logging":
        for i, message in enumerate(["Tool execution started", "Tool processing data", "Tool execution completed"]):
            if i:
                await asyncio.sleep(0.05)
            await ctx.session.send_log_message(
                level="info", data=message, logger="conformance", related_request_id=ctx.request_id
            )
        return [text("Tool with logging executed successfully")]
    if name == "test_tool_with_progress":
        token = ctx.meta.progressToken if ctx.meta else None
        for i, done in enumerate([0, 50, 100]):
            if i:
                await asyncio.sleep(0.05)
            if token is not None:
                await ctx.session.send_progress_notification(
                    token, done, total=100, related_request_id=str(ctx.request_id)
                )
        return [text("Tool with progress executed successfully")]
    if name == "test_error_handling":
        raise RuntimeError("This tool intentionally returns an error for testing")
    if name == "test_sampling":
        answer = await ctx.session.create_message(
            messages=[types.SamplingMessage(role="user", content=text(args["prompt"]))], max_tokens=100
        )
        said = answer.content.text if isinstance(answer.content, types.TextContent) else str(answer.content)
        return [text(f"LLM response: {said}")]
    if name == "test_elicitation":
        form = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        r = await elicit(args["message"], form)
        return [text(f"User response: action={r.action}, content={json.dumps(r.content)}")]
    if name in ("test_elicitation_sep1034_defaults", "test_elicitation_sep1330_enums"):
        form = DEFAULTS_FORM if name.endswith("defaults") else ENUMS_FORM
        r = await elicit("Please review and update the form fields", form)
        return [text(f"Elicitation completed: action={r.action}, content={json.dumps(r.content)}")]
    if name == "json_schema_2020_12_tool":
        return [text(f"Received: {json.dumps(args)}")]
    if name == "test_reconnection":
        await asyncio.sleep(0.2)
        return [text("Reconnection test completed successfully")]
    raise ValueError(f"Unknown tool: {name}")


RESOURCES = [
    types.Resource(
        uri="test://static-text", name="static-text", description="A static text resource", mimeType="text/plain"
    ),
    types.Resource(
        uri="test://static-binary", name="static-binary", description="A static binary resource", mimeType="image/png"
    ),
    types.Resource(
        uri="test://watched-resource", name="watched-resource", description="A resource to subscribe to",
        mimeType="text/plain",
    ),
]


@app.list_resources()
async def list_resources() -> list[types.Resource]:
    return RESOURCES


@app.list_resource_templates()
async def list_resource_templates() -> list[types.ResourceTemplate]:
    return [
        types.ResourceTemplate(
            uriTemplate="test://template/{id}/data",
            name="template-data",
            description="Data for an id",
            mimeType="application/json",
        )
    ]


@app.read_resource()
async def read_resource(uri) -> list[ReadResourceContents]:
    u = str(uri)
    if u == "test://static-text":
        return [ReadResourceContents("This is the content of the static text resource.", "text/plain")]
    if u == "test://static-binary":
        return [ReadResourceContents(base64.b64decode(PNG), "image/png")]
    if u == "test://watched-resource":
        return [ReadResourceContents("Watched resource content.", "text/plain")]
    if u.startswith("test://template/") and u.endswith("/data"):
        ident = u[len("test://template/") : -len("/data")]
        body = {"id": ident, "templateTest": True, "data": f"Data for ID: {ident}"}
        return [ReadResourceContents(json.dumps(body), "application/json")]
    raise ValueError(f"Unknown resource: {u}")


subscribed: set[str] = set()


@app.subscribe_resource()
async def subscribe(uri) -> None:
    subscribed.add(str(uri))


@app.unsubscribe_resource()
async def unsubscribe(uri) -> None:
    subscribed.discard(str(uri))


PROMPTS = [
    types.Prompt(name="test_simple_prompt", description="A prompt without arguments"),
    types.Prompt(
        name="test_prompt_with_arguments",
        description="A prompt with two arguments",
        arguments=[
            types.PromptArgument(name="arg1", description="First argument", required=True),
            types.PromptArgument(name="arg2", description="Second argument", required=True),
        ],
    ),
    types.Prompt(
        name="test_prompt_with_embedded_resource",
        description="A prompt embedding a resource",
        arguments=[types.PromptArgument(name="resourceUri", description="URI of the resource to embed", required=True)],
    ),
    types.Prompt(name="test_prompt_with_image", description="A prompt with an image"),
]


@app.list_prompts()
async def list_prompts() -> list[types.Prompt]:
    return PROMPTS


@app.get_prompt()
async def get_prompt(name: str, args: dict | None) -> types.GetPromptResult:
    args = args or {}
    if name == "test_simple_prompt":
        messages = [types.PromptMessage(role="user", content=text("This is a simple prompt for testing."))]
    elif name == "test_prompt_with_arguments":
        said = f"Prompt with arguments: arg1='{args.get('arg1')}', arg2='{args.get('arg2')}'"
        messages = [types.PromptMessage(role="user", content=text(said))]
    elif name == "test_prompt_with_embedded_resource":
        messages = [
            types.PromptMessage(
                role="user",
                content=types.EmbeddedResource(
                    type="resource",
                    resource=types.TextResourceContents(
                        uri=args["resourceUri"], mimeType="text/plain", text="Embedded resource content for testing."
                    ),
                ),
            ),
            types.PromptMessage(role="user", content=text("Please process the embedded resource above.")),
        ]
    elif name == "test_prompt_with_image":
        messages = [
            types.PromptMessage(role="user", content=types.ImageContent(type="image", data=PNG, mimeType="image/png")),
            types.PromptMessage(role="user", content=text("Please analyze the image above.")),
        ]
    else:
        raise ValueError(f"Unknown prompt: {name}")
    return types.GetPromptResult(messages=messages)


@app.completion()
async def complete(ref, argument, context) -> types.Completion:
    values = [v for v in ("test", "testing", "tested") if v.startswith(argument.value)]
    return types.Completion(values=values, total=len(values), hasMore=False)


@app.set_logging_level()
async def set_level(level) -> None:
    return None


async def main() -> None:
    async with stdio_server() as (read, write):
        options = app.create_initialization_options(NotificationOptions(resources_changed=True))
        await app.run(read, write, options)


if __name__ == "__main__":
    asyncio.run(main())
