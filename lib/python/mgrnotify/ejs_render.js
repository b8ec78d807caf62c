// Renders one EJS template for mgrnotify (template.py runs it under node).
//
// stdin:  one JSON object {"template": "...", "data": {...}, "filename": "..."}
// stdout: the rendered text
// exit:   0 done; 1 the template failed (ejs's message, with the line, on stderr);
//         2 stdin is not such a JSON object; 3 the ejs package cannot be found.
'use strict';

var EXIT_TEMPLATE = 1;
var EXIT_INPUT = 2;
var EXIT_NO_EJS = 3;

function fail(status, message) {
    // exitCode rather than process.exit(), so nothing already written is cut off
    process.stderr.write(message + '\n');
    process.exitCode = status;
}

function render(input) {
    var ejs, job;
    try {
        ejs = require('ejs');
    } catch (e) {
        fail(EXIT_NO_EJS, 'The ejs package for node is not installed or not on NODE_PATH (' +
             e.message.split('\n')[0] + ')');
        return;
    }
    try {
        job = JSON.parse(input);
    } catch (e) {
        fail(EXIT_INPUT, 'The EJS runner expected a JSON object on stdin: ' + e.message);
        return;
    }
    if (!job || typeof job.template !== 'string') {
        fail(EXIT_INPUT, 'The EJS runner expected a JSON object with a "template" string on stdin');
        return;
    }
    try {
        process.stdout.write(ejs.render(job.template, job.data || {}, {filename: job.filename}));
    } catch (e) {
        fail(EXIT_TEMPLATE, e.message);
    }
}

var chunks = [];
process.stdin.on('data', function (chunk) { chunks.push(chunk); });
process.stdin.on('end', function () { render(Buffer.concat(chunks).toString('utf8')); });
