package org.dmdelegate

import java.io.File
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import org.junit.jupiter.api.DynamicTest
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestFactory

/**
 * The message codec against the workspace's golden vectors (`vectors/`): every valid
 * document decodes to its type, every invalid one is a [DelegationException.Decode] naming
 * the field `vectors/invalid/README.md` expects.
 */
class CodecTest {
    private val vectors = File(System.getProperty("vectors.dir") ?: "../../vectors")

    /** `notif-method1-partial.xml` -> `DELEGATION_NOTIF`, `bootstrap-url.xml` -> `BOOTSTRAP_URL`, ... */
    private fun kindOf(file: String): String =
        listOf(
            "bootstrap-url-request" to "BOOTSTRAP_URL_REQUEST",
            "bootstrap-url" to "BOOTSTRAP_URL",
            "notif" to "DELEGATION_NOTIF",
            "res" to "DELEGATION_RES",
            "start" to "DELEGATION_START",
            "prepared" to "DELEGATION_PREPARED",
            "confirm" to "DELEGATION_CONFIRM",
            "failure" to "DELEGATION_FAILURE",
        ).first { (prefix, _) -> file.startsWith(prefix) }.second

    @TestFactory
    fun `valid vectors decode`(): List<DynamicTest> {
        val files = File(vectors, "valid").listFiles { f -> f.extension == "xml" }.orEmpty().sortedBy { it.name }
        assertTrue(files.size >= 10, "no vectors in ${vectors.absolutePath}")
        return files.map { file ->
            DynamicTest.dynamicTest(file.name) {
                val document = file.readBytes()
                validateMessage(document)
                val summary = decodeMessage(document)
                assertEquals(kindOf(file.name), summary.kind)
                assertTrue(summary.sessionId.isNotEmpty() && summary.seq >= 1u)
                assertTrue(summary.method.toInt() in 1..4)
                assertTrue(summary.timestampMs > 0)
                if (file.name == "failure.xml" || file.name == "res-nack.xml") {
                    assertNotNull(summary.reasonCode)
                } else {
                    assertNull(summary.reasonCode)
                }
            }
        }
    }

    @TestFactory
    fun `invalid vectors are Decode errors naming the field`(): List<DynamicTest> {
        // | `file.xml` | `Variant` | `Field/Path` ... |   (field paths for MissingField and
        // InvalidField; "parent/element" for UnexpectedElement; none for the others)
        val row = Regex("""^\| `([^`]+\.xml)` \| `(\w+)` \| (.*)\|[^|]*\|\s*$""")
        val expectations = File(vectors, "invalid/README.md").readLines().mapNotNull { line ->
            val (file, variant, detail) = row.find(line)?.destructured ?: return@mapNotNull null
            val ticks = Regex("`([^`]*)`").findAll(detail).map { it.groupValues[1] }.toList()
            val field = when (variant) {
                "MissingField", "InvalidField" -> ticks.first()
                "UnexpectedElement" -> "${ticks[0]}/${ticks[1]}"
                else -> ""
            }
            file to field
        }
        assertTrue(expectations.size >= 20, "no expectations read")
        return expectations.map { (file, field) ->
            DynamicTest.dynamicTest("$file -> ${field.ifEmpty { "(the document)" }}") {
                val e = assertFailsWith<DelegationException.Decode> {
                    decodeMessage(File(vectors, "invalid/$file").readBytes())
                }
                assertEquals(field, e.field, e.detail)
                assertTrue(e.detail.isNotEmpty())
            }
        }
    }

    @Test
    fun `reason codes have their published descriptions`() {
        assertEquals("rejected by policy", reasonDescription(101u))
        assertNull(reasonDescription(7u))
        assertTrue(version().isNotEmpty())
    }
}
